"""Vector stores: pgvector (PostgreSQL) and OpenSearch, behind `VectorStore`."""

from __future__ import annotations

from lambdas.adapters.db import Database
from lambdas.config import Settings
from lambdas.rag.stores.base import DocumentRef, EmbeddedChunk, Hit, SearchQuery, VectorStore

__all__ = ["DocumentRef", "EmbeddedChunk", "Hit", "SearchQuery", "VectorStore", "store_from_settings"]


def store_from_settings(settings: Settings, db: Database) -> VectorStore:
    """The store the settings name. OpenSearch endpoints are comma-separated, one per region."""
    if settings.vector_store == "opensearch":
        from lambdas.rag.stores.opensearch import OpenSearchStore

        return OpenSearchStore.from_endpoints(settings.opensearch_endpoint, db=db, region=settings.region)
    from lambdas.rag.stores.pgvector import PgVectorStore

    return PgVectorStore(db)
