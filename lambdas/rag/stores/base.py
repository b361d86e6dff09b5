"""The vector store interface shared by pgvector and OpenSearch, and rank fusion for hybrid search.

Documents (title, source, content hash) always live in PostgreSQL; a store holds the chunks. A
write happens inside the caller's PostgreSQL transaction in three steps so that no half-indexed
document is ever visible: `write` adds the chunks of the new generation (identified by the content
hash), then either the transaction commits and `finish` removes older generations, or it fails and
`undo` removes what `write` added.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg

Connection = psycopg.Connection[dict[str, Any]]
RRF_K = 60  # the constant of Cormack et al.'s reciprocal rank fusion


@dataclass(frozen=True, slots=True)
class DocumentRef:
    tenant_id: str
    document_id: str
    content_hash: str
    title: str
    source: str | None


@dataclass(frozen=True, slots=True)
class EmbeddedChunk:
    ordinal: int
    text: str
    tokens: int
    embedding: Sequence[float]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    tenant_id: str
    vector: Sequence[float]
    k: int
    text: str | None = None  # the query words, for the keyword half of hybrid search
    document_ids: Sequence[str] | None = None  # restrict to these documents (None: all of the tenant's)


@dataclass(frozen=True, slots=True)
class Hit:
    document_id: str
    title: str
    ordinal: int
    text: str
    source: str | None
    score: float  # cosine similarity of chunk and query, whatever ranked it
    generation: str | None = None  # the content hash the chunk was written under, where the store keeps it


class VectorStore(ABC):
    name: ClassVar[str]
    supports_hybrid: ClassVar[bool]

    @abstractmethod
    def write(self, conn: Connection, doc: DocumentRef, chunks: Sequence[EmbeddedChunk]) -> None:
        """Store the chunks of `doc`'s generation `doc.content_hash`."""

    @abstractmethod
    def undo(self, doc: DocumentRef) -> None:
        """Remove what `write` added for this generation (the transaction was rolled back)."""

    @abstractmethod
    def finish(self, doc: DocumentRef) -> None:
        """Remove chunks of `doc` that belong to other generations (the transaction committed)."""

    @abstractmethod
    def delete(self, conn: Connection, tenant_id: str, document_id: str) -> None:
        """Remove every chunk of a document."""

    @abstractmethod
    def search(self, query: SearchQuery, *, hybrid: bool = False) -> list[Hit]:
        """The best `query.k` chunks of the tenant, best first."""

    def close(self) -> None:  # noqa: B027  (a default: most stores hold nothing of their own)
        """Release connections held by the store."""


def fuse_by_rank(*rankings: Sequence[Hit], k: int) -> list[Hit]:
    """Reciprocal rank fusion: score each hit by sum(1 / (RRF_K + rank)) over the rankings it is in."""
    fused: dict[tuple[str, int], float] = {}
    first_seen: dict[tuple[str, int], Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            key = (hit.document_id, hit.ordinal)
            fused[key] = fused.get(key, 0.0) + 1.0 / (RRF_K + rank)
            first_seen.setdefault(key, hit)
    order = sorted(fused, key=lambda key: (-fused[key], -first_seen[key].score))
    return [first_seen[key] for key in order[:k]]


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form: [x1,x2,...]."""
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"
