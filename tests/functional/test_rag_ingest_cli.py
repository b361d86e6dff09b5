"""`chatstack ingest` against the embedded PostgreSQL: a mixed batch with bad files goes on, each bad
file is named with its reason, and nothing half-indexed remains."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from click.testing import CliRunner

from chatstack.commands.ingest import ingest
from lambdas.adapters.db import Database
from tests.functional.conftest_rag import *  # noqa: F403  (the fixtures)
from tests.functional.conftest_rag import DATA, document_rows, minimal_pdf


def _batch(root: Path) -> dict[str, Path]:
    files = {
        "good.md": (DATA / "beekeeping.md").read_bytes(),
        "manual.pdf": minimal_pdf(
            ["Torque the stem bolts to five newton metres.", "Grease the seatpost."], title="Bike Manual"
        ),
        "empty.txt": b"",
        "image.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",
        "broken.pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog",
        "deck.pptx": b"PK\x03\x04 not supported",
    }
    paths = {}
    for name, data in files.items():
        paths[name] = root / name
        paths[name].write_bytes(data)
    huge = root / "huge.txt"
    with huge.open("wb") as handle:  # sparse: over the 20 MB limit without writing 21 MB
        handle.truncate(21 * 1024 * 1024)
    paths["huge.txt"] = huge
    return paths


def test_a_mixed_batch_ingests_the_good_files_and_names_each_bad_one(
    tmp_path: Path, rag_pg_url: str, rag_db: Database, tenant: str
) -> None:
    paths = _batch(tmp_path)
    runner = CliRunner()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = runner.invoke(
            ingest,
            [*map(str, paths.values()), "missing.md", "--tenant", tenant, "--database-url", rag_pg_url],
        )
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    out = result.output
    for name, reason in [
        ("empty.txt", "empty"),
        ("image.txt", "binary"),
        ("broken.pdf", "pdf"),
        ("deck.pptx", "unsupported file type"),
        ("huge.txt", "limit"),
        ("missing.md", "no such file"),
    ]:
        line = next((ln for ln in out.splitlines() if ln.startswith("Skipped") and name in ln), "")
        assert reason in line.lower(), (name, out)
    assert "the limit is 20 MiB (20,971,520 bytes)" in out
    assert "Ingested 2 file(s)" in out and "6 skipped" in out
    docs = document_rows(rag_db, tenant)
    assert [d["source"] for d in docs] == ["good.md", "manual.pdf"]
    assert {d["title"] for d in docs} == {"Keeping Bees in a Small Garden", "Bike Manual"}

    os.chdir(tmp_path)  # the same source, good.md, as in the first run (another path is another source)
    try:
        again = runner.invoke(
            ingest, [str(tmp_path / "good.md"), "--tenant", tenant, "--database-url", rag_pg_url]
        )
    finally:
        os.chdir(cwd)
    assert again.exit_code == 0 and "1 unchanged" in again.output


def test_a_directory_is_walked_for_supported_files(
    tmp_path: Path, rag_pg_url: str, rag_db: Database, tenant: str
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("Remember to water the tomatoes every evening.")
    (tmp_path / "sub" / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "secret.md").write_text("# Secret\nNot for indexing.")
    result = CliRunner().invoke(ingest, [str(tmp_path), "--tenant", tenant, "--database-url", rag_pg_url])
    assert result.exit_code == 0, result.output
    assert [Path(d["source"]).name for d in document_rows(rag_db, tenant)] == ["notes.txt"]


def test_the_exit_status_is_1_when_every_file_fails(tmp_path: Path, rag_pg_url: str, tenant: str) -> None:
    (tmp_path / "a.txt").write_bytes(b"")
    (tmp_path / "b.doc").write_bytes(b"\xd0\xcf\x11\xe0")
    result = CliRunner().invoke(
        ingest,
        [str(tmp_path / "a.txt"), str(tmp_path / "b.doc"), "--tenant", tenant, "--database-url", rag_pg_url],
    )
    assert result.exit_code == 1
    assert "Skipped" in result.output and "2 skipped" in result.output


def test_a_fifo_in_a_directory_is_skipped_and_the_rest_go_on(
    tmp_path: Path, rag_pg_url: str, rag_db: Database, tenant: str
) -> None:
    """Reading a FIFO blocks until a writer comes: the command hung for good on `pipe.txt` and never
    reached `z.md` (docs/rag.md: a file that cannot be ingested is named and skipped)."""
    os.mkfifo(tmp_path / "pipe.txt")
    (tmp_path / "z.md").write_text("# Zucchini\nPick them small.")
    # Should the command open the FIFO again, a writer answers it within 10 s: the test then fails on
    # its assertions instead of hanging the suite.
    threading.Thread(target=_answer_a_reader, args=(tmp_path / "pipe.txt",), daemon=True).start()
    result = CliRunner().invoke(ingest, [str(tmp_path), "--tenant", tenant, "--database-url", rag_pg_url])
    assert result.exit_code == 0, result.output
    assert "pipe.txt: not a regular file." in result.output
    assert [Path(d["source"]).name for d in document_rows(rag_db, tenant)] == ["z.md"]


def _answer_a_reader(fifo: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while nobody reads
        except OSError:
            time.sleep(0.1)
            continue
        os.write(fd, b"written to a pipe")
        os.close(fd)
        return


def test_a_database_that_cannot_be_used_is_one_sentence(tmp_path: Path, tenant: str) -> None:
    (tmp_path / "a.md").write_text("# A\nText.")
    for url in ("postgresql://nobody@127.0.0.1:1/x", "notaurl"):
        args = [str(tmp_path / "a.md"), "--tenant", tenant, "--database-url", url]
        result = CliRunner().invoke(ingest, args)
        assert result.exit_code == 1 and result.output.startswith("Error: Cannot use the database: ")
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_pdf_with_a_nul_title_is_ingested_with_a_clean_title_and_the_batch_goes_on(
    tmp_path: Path, rag_pg_url: str, rag_db: Database, tenant: str
) -> None:
    """Was: a traceback from PostgreSQL on the NUL in the title, exit 1, and `c_last.txt` never ingested."""
    (tmp_path / "a_first.txt").write_text("The first file of the batch.")
    nul_title = minimal_pdf(["Quarterly numbers."], info="<< /Title <FEFF0041000000420007> >>")
    (tmp_path / "b_nul.pdf").write_bytes(nul_title)
    (tmp_path / "c_last.txt").write_text("The last file of the batch.")
    (tmp_path / "d_late_nul.md").write_bytes(b"Filler line.\n" * 6000 + b"# Heading \x00\n")
    result = CliRunner().invoke(ingest, [str(tmp_path), "--tenant", tenant, "--database-url", rag_pg_url])
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    skipped = [ln for ln in result.output.splitlines() if ln.startswith("Skipped")]
    assert len(skipped) == 1 and "d_late_nul.md" in skipped[0] and "nul" in skipped[0].lower(), result.output
    docs = document_rows(rag_db, tenant)
    assert [Path(d["source"]).name for d in docs] == ["a_first.txt", "b_nul.pdf", "c_last.txt"]
    assert docs[1]["title"] == "AB"
