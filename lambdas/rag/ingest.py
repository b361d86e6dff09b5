"""The ingestion service: parse, chunk, embed and index documents; list and delete them.

Used by `POST /v1/documents` and by `chatstack ingest`. A document is identified by
(tenant, source). Its content hash de-duplicates: the same text under the same source (or under any
source of the same tenant, for a new source) is not embedded again. Changed text replaces the
document's chunks as one unit. Embedding happens before the transaction, so no lock is held while
the model runs.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lambdas.adapters.db import Database
from lambdas.errors import BadRequest
from lambdas.rag.chunking import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS, chunk_text
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
        self, *, tenant_id: str, source: str, data: bytes, mime: str | None = None
    ) -> IngestResult:
        """Ingest an uploaded or local file; raises `DocumentRejected` for bad input."""
        _check_identity(tenant_id, source)
        parsed = parse_document(source, data, mime=mime, max_bytes=self.max_bytes)
        return self._ingest(tenant_id, source, parsed.title, parsed.text, parsed.mime, len(data))

    def ingest_text(
        self, *, tenant_id: str, source: str, text: str, title: str | None = None, mime: str = "text/plain"
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
        return self._ingest(tenant_id, source, shown, body, mime, len(text.encode()))

    def _ingest(
        self, tenant_id: str, source: str, title: str, text: str, mime: str, size: int
    ) -> IngestResult:
        _check_identity(tenant_id, source)
        content_hash = hashlib.sha256(text.encode()).hexdigest()
        with self.db.transaction() as conn:
            early = self._duplicate(conn, tenant_id, source, content_hash, title)
        if early is not None:
            return early
        chunks = chunk_text(text, max_tokens=self.chunk_tokens, overlap=self.overlap_tokens)
        if not chunks:
            raise DocumentRejected("The document has no text to index.", reason="empty")
        # The title goes into what is embedded: a chunk deep in a document rarely repeats its subject.
        vectors = self.embedder.embed([f"{title}\n{chunk.text}" for chunk in chunks])
        embedded = [
            EmbeddedChunk(c.ordinal, c.text, c.tokens, v) for c, v in zip(chunks, vectors, strict=True)
        ]
        written: DocumentRef | None = None
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 2))", (f"{tenant_id}\x1f{source}",)
                )
                late = self._duplicate(conn, tenant_id, source, content_hash, title)
                if late is not None:
                    return late
                row = conn.execute(
                    "SELECT id::text AS id FROM documents WHERE tenant_id = %s AND source = %s",
                    (tenant_id, source),
                ).fetchone()
                document_id = row["id"] if row else str(uuid.uuid4())
                conn.execute(
                    "INSERT INTO documents (id, tenant_id, source, title, content_hash, mime,"
                    " embedding_model, chunk_count, byte_size) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (tenant_id, source) DO UPDATE SET title = EXCLUDED.title,"
                    " content_hash = EXCLUDED.content_hash, mime = EXCLUDED.mime,"
                    " embedding_model = EXCLUDED.embedding_model, chunk_count = EXCLUDED.chunk_count,"
                    " byte_size = EXCLUDED.byte_size, updated_at = now()",
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
                    ),
                )
                written = DocumentRef(tenant_id, document_id, content_hash, title, source)
                self.store.write(conn, written, embedded)
        except BaseException:
            if written is not None:
                self.store.undo(written)
            raise
        assert written is not None  # the transaction either wrote or returned a duplicate
        self.store.finish(written)
        return IngestResult(
            document_id, source, title, len(embedded), deduplicated=False, replaced=row is not None
        )

    def _duplicate(
        self, conn: Connection, tenant_id: str, source: str, content_hash: str, title: str
    ) -> IngestResult | None:
        """The existing document when this content needs no indexing, else None."""
        same_source = conn.execute(
            "SELECT id::text AS id, content_hash, embedding_model, chunk_count, title FROM documents"
            " WHERE tenant_id = %s AND source = %s",
            (tenant_id, source),
        ).fetchone()
        if same_source is not None:
            if (
                same_source["content_hash"] != content_hash
                or same_source["embedding_model"] != self.embedder.model_id
            ):
                return None
            if same_source["title"] != title:
                conn.execute(
                    "UPDATE documents SET title = %s, updated_at = now() WHERE id = %s",
                    (title, same_source["id"]),
                )
            return IngestResult(same_source["id"], source, title, same_source["chunk_count"], True, False)
        other = conn.execute(
            "SELECT id::text AS id, source, title, chunk_count FROM documents WHERE tenant_id = %s"
            " AND content_hash = %s AND embedding_model = %s ORDER BY created_at LIMIT 1",
            (tenant_id, content_hash, self.embedder.model_id),
        ).fetchone()
        if other is None:
            return None
        return IngestResult(other["id"], other["source"], other["title"], other["chunk_count"], True, False)

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
        with self.db.transaction() as conn:
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
