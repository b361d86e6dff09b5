"""`chatstack ingest PATH...`: index Markdown, text, HTML and PDF files for retrieval.

Talks to the database directly: the embedded PostgreSQL of the `chatstack up` running on `--data-dir`
(or `CHATSTACK_DATA_DIR`), or `--database-url`. Directories are walked for supported files. A file that
cannot be ingested is reported by name with the reason and skipped; the rest go on. Exit status 0
when at least one file was ingested (or there was nothing to do), 1 when every file failed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from chatstack.commands._local import check_tenant_option, data_dir_option, require_service
from lambdas.rag.parsing import MAX_DOCUMENT_BYTES, MIME_BY_SUFFIX, too_large_message

if TYPE_CHECKING:
    from chatstack.local.embedded import EmbeddedPostgres
    from lambdas.rag.ingest import IngestService

DEFAULT_TENANT = "local"  # the tenant of the development token `chatstack up` prints


@dataclass
class Outcome:
    ingested: int = 0
    unchanged: int = 0
    chunks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def discover(paths: tuple[str, ...], outcome: Outcome) -> list[Path]:
    """Files to ingest: named files as given, supported files found under named directories."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(_walk(path))
        elif path.is_file():
            files.append(path)
        else:
            outcome.skipped.append((raw, "no such file or directory"))
    return list(dict.fromkeys(files))


def _walk(directory: Path) -> Iterator[Path]:
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and Path(name).suffix.lower() in MIME_BY_SUFFIX:
                yield Path(root) / name


def source_name(path: Path) -> str:
    """The document's source: the path relative to the working directory when below it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--tenant", default=DEFAULT_TENANT, show_default=True, help="The tenant that owns the documents."
)
@data_dir_option
@click.option(
    "--database-url",
    envvar=["CHATSTACK_DATABASE_URL", "DATABASE_URL"],
    default=None,
    help="Use this PostgreSQL instead of the embedded one.",
)
def ingest(paths: tuple[str, ...], tenant: str, data_dir: Path, database_url: str | None) -> None:
    """Index the documents at PATHS (files or directories) for retrieval."""
    from tqdm import tqdm

    check_tenant_option(tenant)
    if not database_url:
        require_service(data_dir)
    outcome = Outcome()
    files = discover(paths, outcome)
    if files:
        embedded, service = _service(data_dir, database_url)  # one sentence when it cannot be used
        try:
            with tqdm(files, desc="Ingesting", unit="file", dynamic_ncols=True) as bar:
                for path in bar:
                    _ingest_one(service, tenant, path, outcome)
                    bar.set_postfix(chunks=outcome.chunks, skipped=len(outcome.skipped))
        finally:
            service.db.close()
            if embedded is not None:
                embedded.close()
    for name, reason in outcome.skipped:
        click.echo(f"Skipped {name}: {reason}", err=True)
    click.echo(
        f"Ingested {outcome.ingested} file(s) into {outcome.chunks} chunk(s) for tenant {tenant!r}; "
        f"{outcome.unchanged} unchanged, {len(outcome.skipped)} skipped."
    )
    if outcome.skipped and not (outcome.ingested or outcome.unchanged):
        raise SystemExit(1)


def _ingest_one(service: IngestService, tenant: str, path: Path, outcome: Outcome) -> None:
    import psycopg

    from lambdas.errors import ChatError

    name = str(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block the read for ever
            outcome.skipped.append((name, "not a regular file."))
            return
        size = info.st_size
        if size > service.max_bytes:
            message = too_large_message(size, service.max_bytes)
            outcome.skipped.append((name, message[0].lower() + message[1:]))
            return
        result = service.ingest_file(tenant_id=tenant, source=source_name(path), data=path.read_bytes())
    except ChatError as exc:
        outcome.skipped.append((name, exc.message[0].lower() + exc.message[1:]))
        return
    except OSError as exc:
        outcome.skipped.append((name, f"cannot read it ({exc.strerror or type(exc).__name__})."))
        return
    except psycopg.DataError as exc:  # content the database refuses: this file only, the rest go on
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        outcome.skipped.append((name, f"the database refused its content ({first})."))
        return
    if result.deduplicated:
        outcome.unchanged += 1
    else:
        outcome.ingested += 1
        outcome.chunks += result.chunks


def _service(data_dir: Path, database_url: str | None) -> tuple[EmbeddedPostgres | None, IngestService]:
    from lambdas.adapters.db import Database
    from lambdas.config import settings_from_env
    from lambdas.rag.embeddings import embedder_from_settings
    from lambdas.rag.ingest import IngestService
    from lambdas.rag.stores import store_from_settings

    embedded = None
    if not database_url:
        from chatstack.local.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(data_dir / "pg")
        database_url = embedded.url
    import psycopg

    db = Database(database_url, max_size=2)
    try:
        db.migrate()
    except psycopg.Error as exc:
        db.close()
        if embedded is not None:
            embedded.close()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise click.ClickException(f"Cannot use the database: {reason}") from None
    settings = settings_from_env()
    service = IngestService(
        db, embedder_from_settings(settings), store_from_settings(settings, db), max_bytes=MAX_DOCUMENT_BYTES
    )
    return embedded, service
