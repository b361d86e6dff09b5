"""Chunks in PostgreSQL with pgvector: an HNSW index on cosine distance and a tsvector for keywords.

The tenant filter is a plain `WHERE tenant_id = ...`. With a filter, a bare HNSW scan can return
fewer than k rows (the graph's nearest candidates may belong to other tenants), so queries turn on
pgvector's iterative scan (`hnsw.iterative_scan = relaxed_order`, pgvector >= 0.8): the index keeps
walking until k rows pass the filter, and the outer query restores exact order (`distance + 0`, so
the planner cannot take the relaxed index order as already sorted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from lambdas.adapters.db import Database
from lambdas.rag.stores.base import (
    Connection,
    DocumentRef,
    EmbeddedChunk,
    Hit,
    SearchQuery,
    VectorStore,
    fuse_by_rank,
    vector_literal,
)

_VECTOR_SQL = """
WITH nearest AS MATERIALIZED (
    SELECT document_id, ordinal, text, embedding <=> %(vector)s::vector AS distance
    FROM chunks
    WHERE tenant_id = %(tenant)s {documents}
    ORDER BY distance
    LIMIT %(k)s
)
SELECT n.document_id::text AS document_id, d.title, d.source, n.ordinal, n.text,
       1 - n.distance AS score
FROM nearest n JOIN documents d ON d.id = n.document_id
ORDER BY n.distance + 0
"""

# Any query word may match (OR), ranked by cover density; plainto_tsquery does the stemming and
# stop-word removal and never fails on user input.
_KEYWORD_SQL = """
SELECT c.document_id::text AS document_id, d.title, d.source, c.ordinal, c.text,
       1 - (c.embedding <=> %(vector)s::vector) AS score
FROM chunks c
JOIN documents d ON d.id = c.document_id
CROSS JOIN LATERAL (
    SELECT replace(plainto_tsquery('english', %(text)s)::text, '&', '|')::tsquery AS q
) words
WHERE c.tenant_id = %(tenant)s {documents} AND words.q::text <> '' AND c.tsv @@ words.q
ORDER BY ts_rank_cd(c.tsv, words.q) DESC, c.id
LIMIT %(k)s
"""


class PgVectorStore(VectorStore):
    name: ClassVar[str] = "pgvector"
    supports_hybrid: ClassVar[bool] = True

    def __init__(self, db: Database, *, ef_search: int = 100) -> None:
        self.db = db
        self.ef_search = ef_search

    def write(self, conn: Connection, doc: DocumentRef, chunks: Sequence[EmbeddedChunk]) -> None:
        # Old and new generation swap inside the caller's transaction: nobody sees a mix.
        conn.execute("DELETE FROM chunks WHERE document_id = %s", (doc.document_id,))
        with conn.cursor().copy(
            "COPY chunks (document_id, tenant_id, ordinal, text, tokens, embedding) FROM STDIN"
        ) as copy:
            for chunk in chunks:
                copy.write_row(
                    (
                        doc.document_id,
                        doc.tenant_id,
                        chunk.ordinal,
                        chunk.text,
                        chunk.tokens,
                        vector_literal(chunk.embedding),
                    )
                )

    def undo(self, doc: DocumentRef) -> None:
        """Nothing to do: the rolled-back transaction took the new rows with it."""

    def finish(self, doc: DocumentRef) -> None:
        """Nothing to do: `write` already replaced the old rows in the same transaction."""

    def delete(self, conn: Connection, tenant_id: str, document_id: str) -> None:
        conn.execute("DELETE FROM chunks WHERE tenant_id = %s AND document_id = %s", (tenant_id, document_id))

    def search(self, query: SearchQuery, *, hybrid: bool = False) -> list[Hit]:
        if query.k <= 0:
            return []
        with self.db.transaction() as conn:
            return self.search_in(conn, query, hybrid=hybrid)

    def search_in(self, conn: Connection, query: SearchQuery, *, hybrid: bool = False) -> list[Hit]:
        """`search` inside the caller's transaction (its SET LOCALs end with it)."""
        params: dict[str, Any] = {
            "vector": vector_literal(query.vector),
            "tenant": query.tenant_id,
            "k": query.k,
            "text": query.text or "",
            "documents": list(query.document_ids or []),
        }
        documents = "AND document_id = ANY(%(documents)s::uuid[])" if query.document_ids is not None else ""
        conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        ef_search = str(max(self.ef_search, query.k))
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (ef_search,))
        by_vector = [_hit(row) for row in conn.execute(_VECTOR_SQL.format(documents=documents), params)]
        if not (hybrid and query.text and query.text.strip()):
            return by_vector
        keyword_sql = _KEYWORD_SQL.format(documents=documents.replace("document_id", "c.document_id"))
        by_words = [_hit(row) for row in conn.execute(keyword_sql, params)]
        return fuse_by_rank(by_vector, by_words, k=query.k)


def _hit(row: dict[str, Any]) -> Hit:
    return Hit(
        document_id=row["document_id"],
        title=row["title"],
        ordinal=row["ordinal"],
        text=row["text"],
        source=row["source"],
        score=float(row["score"]),
    )
