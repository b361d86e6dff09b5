"""The ingestion service: parse, chunk, embed and index documents; list and delete them.

Used by `POST /v1/documents` and by `chatstack ingest`. A document is identified by
(tenant, source). The same text and title under the same source is not written again. Changed text
or a changed title replaces the document's chunks as one unit, re-embedded (the title is part of
what is embedded). The same text under a new source is a document of its own; its vectors are
copied from a document with the same text and title where the store keeps them in PostgreSQL.
Embedding happens before the transaction, so no lock is held while the model runs; the transaction
records the writer, and refuses (404) to re-create a document deleted while it was being replaced.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from lambdas.adapters.db import Database
from lambdas.errors import BadRequest, NotFound
from lambdas.rag.chunking import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS, Chunk, chunk_text
from lambdas.rag.embeddings import Embedder
from lambdas.rag.parsing import (
    MAX_DOCUMENT_BYTES,
    MAX_TEXT_CHARS,
    DocumentRejected,
    clean_text,
    clean_title,
    parse_document,
)
from lambdas.rag.stores.base import Connection, DocumentRef, EmbeddedChunk, VectorStore

MAX_SOURCE_CHARS = 1024
# Refused in a source: control characters (line breaks and tabs included: a source is one line) and
# bidi controls, which make one name display as another ("invoice\u202etxt.exe.txt").
_BAD_SOURCE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Refused in a title given by the caller: the same but tab and line breaks, which collapse to a space.
_BAD_TITLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True, slots=True)
class IngestResult:
    document_id: str
    source: str
    title: str
    chunks: int
    deduplicated: bool
    replaced: bool  # an earlier version of this source was replaced


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    id: str
    source: str
    title: str
    mime: str
    chunk_count: int
    content_hash: str
    created_at: datetime
    updated_at: datetime


# A document's rows (thousands of chunks with their vectors) in one transaction, with an OpenSearch
# store's bulk writes to every region inside it: longer than the chat path's deadline
# (lambdas/adapters/db.py), as long as a writer that waits for another's lock needs.
WRITE_DEADLINE_S = 300.0

class IngestService:
    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        store: VectorStore,
        *,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
        max_bytes: int = MAX_DOCUMENT_BYTES,
    ) -> None:
        self.db = db
        self.embedder = embedder
        self.store = store
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        self.max_bytes = max_bytes

    def ingest_file(
        self, *, tenant_id: str, source: str, data: bytes, mime: str | None = None, writer: str | None = None
    ) -> IngestResult:
        """Ingest an uploaded or local file; raises `DocumentRejected` for bad input. `writer` (the
        caller's user id; None for the CLI) is recorded in the same transaction as the write."""
        _check_identity(tenant_id, source)
        parsed = parse_document(source, data, mime=mime, max_bytes=self.max_bytes)
        return self._ingest(tenant_id, source, parsed.title, parsed.text, parsed.mime, len(data), writer)

    def ingest_text(
        self,
        *,
        tenant_id: str,
        source: str,
        text: str,
        title: str | None = None,
        mime: str = "text/plain",
        writer: str | None = None,
    ) -> IngestResult:
        """Ingest text given directly (the JSON form of the REST API). The title is one line: its
        whitespace is collapsed; without one (or a blank one) it is the source."""
        _check_identity(tenant_id, source)
        if title is not None and _BAD_TITLE.search(title):
            raise DocumentRejected(
                "title: control characters and bidi controls are not allowed.", reason="bad_title"
            )
        body = clean_text(text).strip()
        if not body:
            raise DocumentRejected("The text is empty.", reason="empty")
        if len(body) > MAX_TEXT_CHARS:
            raise DocumentRejected(
                f"The text is longer than {MAX_TEXT_CHARS:,} characters.", reason="too_large"
            )
        shown = clean_title(title) or clean_title(source)
        return self._ingest(tenant_id, source, shown, body, mime, len(text.encode()), writer)

    def _ingest(
        self, tenant_id: str, source: str, title: str, text: str, mime: str, size: int, writer: str | None
    ) -> IngestResult:
        _check_identity(tenant_id, source)
        content_hash = hashlib.sha256(text.encode()).hexdigest()
        with self.db.transaction() as conn:
            current = self._current(conn, tenant_id, source)
        if current is not None and self._unchanged(current, content_hash, title):
            return IngestResult(current["id"], source, title, current["chunk_count"], True, False)
        replacing = current["id"] if current is not None else None
        chunks = chunk_text(text, max_tokens=self.chunk_tokens, overlap=self.overlap_tokens)
        if not chunks:
            raise DocumentRejected("The document has no text to index.", reason="empty")
        # The title goes into what is embedded: a chunk deep in a document rarely repeats its subject.
        # So a new title is a new embedding, and identical text under another source is embedded again
        # unless that document has the same title (then its vectors are copied).
        vectors = self._reusable_vectors(tenant_id, content_hash, title, chunks) or self.embedder.embed(
            [f"{title}\n{chunk.text}" for chunk in chunks]
        )
        embedded = [
            EmbeddedChunk(c.ordinal, c.text, c.tokens, v) for c, v in zip(chunks, vectors, strict=True)
        ]
        written: DocumentRef | None = None
        try:
            with self.db.transaction(deadline_s=WRITE_DEADLINE_S) as conn:
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 2))", (f"{tenant_id}\x1f{source}",)
                )
                # FOR UPDATE: a delete in flight finishes first (and the row is gone), or waits for this
                # transaction and then deletes what it wrote.
                row = self._current(conn, tenant_id, source, lock=True)
                if replacing is not None and (row is None or row["id"] != replacing):
                    raise NotFound(
                        "The document was deleted while this upload was replacing it; nothing was stored."
                        " Upload it again to create it anew."
                    )
                if row is not None and self._unchanged(row, content_hash, title):  # a concurrent twin
                    return IngestResult(row["id"], source, title, row["chunk_count"], True, False)
                document_id = row["id"] if row else str(uuid.uuid4())
                conn.execute(
                    "INSERT INTO documents (id, tenant_id, source, title, content_hash, mime,"
                    " embedding_model, chunk_count, byte_size, created_by, updated_by)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (tenant_id, source) DO UPDATE SET title = EXCLUDED.title,"
                    " content_hash = EXCLUDED.content_hash, mime = EXCLUDED.mime,"
                    " embedding_model = EXCLUDED.embedding_model, chunk_count = EXCLUDED.chunk_count,"
                    " byte_size = EXCLUDED.byte_size, updated_at = now(),"
                    " created_by = COALESCE(documents.created_by, EXCLUDED.created_by),"
                    " updated_by = EXCLUDED.updated_by",
                    (
                        document_id,
                        tenant_id,
                        source,
                        title,
                        content_hash,
                        mime,
                        self.embedder.model_id,
                        len(embedded),
                        size,
                        writer,
                        writer,
                    ),
                )
                written = DocumentRef(tenant_id, document_id, content_hash, title, source)
                self.store.write(conn, written, embedded)
        except psycopg.OperationalError:
            # The connection failed (or its deadline cut it) perhaps after the server committed: the
            # index entries written for this content may be the ones PostgreSQL now records, so they
            # stay. If the commit did not happen they are orphans, which searches never return (they
            # keep only the content PostgreSQL records) and the next write of the document replaces.
            raise
        except BaseException:
            if written is not None:
                self.store.undo(written)
            raise
        assert written is not None  # the transaction either wrote or returned a duplicate
        self.store.finish(written)
        return IngestResult(
            document_id, source, title, len(embedded), deduplicated=False, replaced=row is not None
        )

    @staticmethod
    def _current(
        conn: Connection, tenant_id: str, source: str, *, lock: bool = False
    ) -> dict[str, Any] | None:
        return conn.execute(
            "SELECT id::text AS id, content_hash, embedding_model, chunk_count, title FROM documents"
            " WHERE tenant_id = %s AND source = %s" + (" FOR UPDATE" if lock else ""),
            (tenant_id, source),
        ).fetchone()

    def _unchanged(self, row: dict[str, Any], content_hash: str, title: str) -> bool:
        """Whether the stored document already is this text under this title and model: nothing to
        write (and no writer to record)."""
        return bool(
            row["content_hash"] == content_hash
            and row["title"] == title
            and row["embedding_model"] == self.embedder.model_id
        )

    def _reusable_vectors(
        self, tenant_id: str, content_hash: str, title: str, chunks: Sequence[Chunk]
    ) -> list[list[float]] | None:
        """The vectors of another document of the tenant with the same text, title and model, when its
        chunks are exactly these (pgvector keeps chunks in PostgreSQL; other stores answer None)."""
        with self.db.transaction() as conn:
            other = conn.execute(
                "SELECT id FROM documents WHERE tenant_id = %s AND content_hash = %s AND title = %s"
                " AND embedding_model = %s AND chunk_count = %s ORDER BY created_at LIMIT 1",
                (tenant_id, content_hash, title, self.embedder.model_id, len(chunks)),
            ).fetchone()
            if other is None:
                return None
            rows = conn.execute(
                "SELECT ordinal, text, embedding::text AS embedding FROM chunks WHERE tenant_id = %s"
                " AND document_id = %s ORDER BY ordinal",
                (tenant_id, other["id"]),
            ).fetchall()
        if [(r["ordinal"], r["text"]) for r in rows] != [(c.ordinal, c.text) for c in chunks]:
            return None
        return [[float(x) for x in r["embedding"].strip("[]").split(",")] for r in rows]

    def list_documents(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[DocumentInfo]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT id::text AS id, source, title, mime, chunk_count, content_hash, created_at,"
                " updated_at FROM documents WHERE tenant_id = %s"
                " ORDER BY updated_at DESC, id DESC LIMIT %s OFFSET %s",
                (tenant_id, limit, offset),
            ).fetchall()
        return [DocumentInfo(**row) for row in rows]

    def delete_document(self, tenant_id: str, document_id: str) -> bool:
        """Delete a document of this tenant and its chunks; False when there is none."""
        if not _is_uuid(document_id):
            return False
        with self.db.transaction(deadline_s=WRITE_DEADLINE_S) as conn:  # its chunks go with it
            gone = conn.execute(
                "DELETE FROM documents WHERE tenant_id = %s AND id = %s RETURNING id",
                (tenant_id, document_id),
            ).fetchone()
            if gone is None:
                return False
            self.store.delete(conn, tenant_id, document_id)
        return True

    def chunk_texts(self, tenant_id: str, document_id: str) -> Sequence[dict[str, Any]]:
        """The stored chunks of a pgvector-backed document, in order (for inspection and tests)."""
        with self.db.transaction() as conn:
            return conn.execute(
                "SELECT ordinal, text, tokens FROM chunks WHERE tenant_id = %s AND document_id = %s"
                " ORDER BY ordinal",
                (tenant_id, document_id),
            ).fetchall()


def _check_identity(tenant_id: str, source: str) -> None:
    if not tenant_id:
        raise BadRequest("A tenant is required.")
    if not source.strip():
        raise BadRequest("A document source (file name or URL) is required.")
    if len(source) > MAX_SOURCE_CHARS:
        raise BadRequest(f"The document source is longer than {MAX_SOURCE_CHARS} characters.")
    if _BAD_SOURCE.search(source):
        raise DocumentRejected(
            "The document source (file name) holds control characters or bidi controls, which are not"
            " allowed.",
            reason="bad_source",
        )


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
