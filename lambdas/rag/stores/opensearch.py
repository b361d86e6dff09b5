"""Chunks in OpenSearch (Serverless vector collections or managed domains) through opensearch-py.

One index per region; ingestion writes to every region's index, queries read the local one.
- Requests to `*.aoss.amazonaws.com` are SigV4-signed for service `aoss`, `*.es.amazonaws.com` for
  `es`; any other URL (a local OpenSearch) is used as is.
- The k-NN field is Faiss HNSW with inner product on unit vectors (equal to cosine similarity and
  supported by every Faiss release and by Serverless). Tenant and document filters go inside the
  `knn` clause (efficient filtering), so a filtered query still returns k results.
- Serverless vector collections assign document ids themselves, so chunks carry their document id
  and generation (the content hash) as fields and are found by query, not by `_id`. Bulk requests
  retry 429s with backoff.
- Hybrid search runs a k-NN and a `match` query and fuses them by rank here: Serverless has no
  search pipelines, so the hybrid query's normalisation processor is not available there.
- Serverless makes new documents searchable after a delay, so a failed write's leftovers may be
  missed by the clean-up query; search therefore keeps only hits whose generation is the one
  PostgreSQL records for the document.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from lambdas.adapters.db import Database
from lambdas.rag.embeddings import DIMENSION
from lambdas.rag.stores.base import (
    Connection,
    DocumentRef,
    EmbeddedChunk,
    Hit,
    SearchQuery,
    VectorStore,
    fuse_by_rank,
)

DEFAULT_INDEX = "chatstack-chunks"
_SOURCE_FIELDS = ["tenant_id", "document_id", "content_hash", "ordinal", "title", "source", "text"]


def index_body(dimension: int = DIMENSION) -> dict[str, Any]:
    """Settings and mapping of a chunk index (k-NN enabled, Faiss HNSW, inner product)."""
    return {
        "settings": {"index": {"knn": True, "knn.algo_param.ef_search": 100}},
        "mappings": {
            "properties": {
                "embedding": {
                    "type": "knn_vector",
                    "dimension": dimension,
                    "method": {
                        "name": "hnsw",
                        "engine": "faiss",
                        "space_type": "innerproduct",
                        "parameters": {"m": 16, "ef_construction": 128},
                    },
                },
                "tenant_id": {"type": "keyword"},
                "document_id": {"type": "keyword"},
                "content_hash": {"type": "keyword"},
                "ordinal": {"type": "integer"},
                "title": {"type": "text"},
                "source": {"type": "keyword"},
                "text": {"type": "text", "analyzer": "english"},
            }
        },
    }


def _filters(query: SearchQuery) -> list[dict[str, Any]]:
    clauses: list[dict[str, Any]] = [{"term": {"tenant_id": query.tenant_id}}]
    if query.document_ids is not None:
        clauses.append({"terms": {"document_id": list(query.document_ids)}})
    return clauses


def knn_query_body(query: SearchQuery, size: int) -> dict[str, Any]:
    """A k-NN query with the tenant (and document) filter applied during the graph search."""
    return {
        "size": size,
        "_source": {"includes": _SOURCE_FIELDS},
        "query": {
            "knn": {
                "embedding": {
                    "vector": [float(x) for x in query.vector],
                    "k": size,
                    "filter": {"bool": {"filter": _filters(query)}},
                }
            }
        },
    }


def keyword_query_body(query: SearchQuery, size: int) -> dict[str, Any]:
    """A BM25 `match` query on the chunk text under the same filters; returns the vectors so the
    hits can be scored by cosine similarity like the k-NN ones."""
    return {
        "size": size,
        "_source": {"includes": [*_SOURCE_FIELDS, "embedding"]},
        "query": {
            "bool": {"must": [{"match": {"text": {"query": query.text or ""}}}], "filter": _filters(query)}
        },
    }


def cosine_from_score(score: float) -> float:
    """Invert the Faiss inner-product score: ip > 0 gives 1 + ip, ip <= 0 gives 1 / (1 - ip)."""
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score


def region_of(endpoint: str, default: str) -> tuple[str, str | None]:
    """(region, SigV4 service) of an endpoint URL; service None means unsigned (not AWS)."""
    host = urlsplit(endpoint).hostname or ""
    for service in ("aoss", "es"):
        suffix = f".{service}.amazonaws.com"
        if host.endswith(suffix):
            return host[: -len(suffix)].rsplit(".", 1)[-1], service
    return default, None


def make_client(endpoint: str, default_region: str) -> Any:
    from opensearchpy import OpenSearch, Urllib3AWSV4SignerAuth, Urllib3HttpConnection

    region, service = region_of(endpoint, default_region)
    auth = None
    if service is not None:
        import boto3

        auth = Urllib3AWSV4SignerAuth(boto3.Session().get_credentials(), region, service)
    parts = urlsplit(endpoint)
    return OpenSearch(
        hosts=[endpoint],
        http_auth=auth,
        use_ssl=parts.scheme == "https",
        verify_certs=parts.scheme == "https",
        connection_class=Urllib3HttpConnection,
        timeout=20,
        max_retries=3,
        retry_on_timeout=True,
        retry_on_status=(429, 502, 503, 504),
        pool_maxsize=16,
    )


@dataclass(frozen=True)
class RegionalIndex:
    region: str
    client: Any


class OpenSearchStore(VectorStore):
    name: ClassVar[str] = "opensearch"
    supports_hybrid: ClassVar[bool] = True

    def __init__(
        self,
        regions: Sequence[RegionalIndex],
        *,
        db: Database,
        local_region: str,
        index: str = DEFAULT_INDEX,
        refresh: bool = False,
        dimension: int = DIMENSION,
    ) -> None:
        if not regions:
            raise ValueError("No OpenSearch endpoint: set CHATSTACK_OPENSEARCH_ENDPOINT.")
        self.regions = list(regions)
        self.reader = next((r for r in regions if r.region == local_region), regions[0])
        self.db = db
        self.index = index
        # Serverless refuses `refresh`; a local OpenSearch needs it for read-your-writes in tests.
        self.refresh = refresh
        self.dimension = dimension
        self._ensured = False

    @classmethod
    def from_endpoints(
        cls,
        endpoints: str,
        *,
        db: Database,
        region: str,
        index: str = DEFAULT_INDEX,
        refresh: bool | None = None,
    ) -> OpenSearchStore:
        urls = [u.strip() for u in endpoints.split(",") if u.strip()]
        regions = [RegionalIndex(region_of(u, region)[0], make_client(u, region)) for u in urls]
        signed = any(region_of(u, region)[1] for u in urls)
        return cls(
            regions,
            db=db,
            local_region=region,
            index=index,
            refresh=(not signed) if refresh is None else refresh,
        )

    def _refresh_args(self) -> dict[str, Any]:
        return {"refresh": "true"} if self.refresh else {}

    def ensure_index(self) -> None:
        if self._ensured:
            return
        for regional in self.regions:
            if not regional.client.indices.exists(index=self.index):
                regional.client.indices.create(index=self.index, body=index_body(self.dimension), ignore=400)
        self._ensured = True

    def write(self, conn: Connection, doc: DocumentRef, chunks: Sequence[EmbeddedChunk]) -> None:
        from opensearchpy import helpers

        self.ensure_index()
        for regional in self.regions:
            for ok, item in helpers.streaming_bulk(
                regional.client,
                self._actions(doc, chunks),
                chunk_size=200,
                max_chunk_bytes=8 * 1024 * 1024,
                max_retries=4,
                initial_backoff=1,
                max_backoff=16,
                raise_on_error=True,
                **self._refresh_args(),
            ):
                if not ok:
                    raise RuntimeError(f"OpenSearch refused a chunk in {regional.region}: {item}")

    def _actions(self, doc: DocumentRef, chunks: Sequence[EmbeddedChunk]) -> Iterator[dict[str, Any]]:
        for chunk in chunks:
            yield {
                "_op_type": "index",
                "_index": self.index,
                "_source": {
                    "tenant_id": doc.tenant_id,
                    "document_id": doc.document_id,
                    "content_hash": doc.content_hash,
                    "ordinal": chunk.ordinal,
                    "title": doc.title,
                    "source": doc.source,
                    "text": chunk.text,
                    "embedding": [float(x) for x in chunk.embedding],
                },
            }

    def undo(self, doc: DocumentRef) -> None:
        self._delete_where(
            [{"term": {"document_id": doc.document_id}}, {"term": {"content_hash": doc.content_hash}}]
        )

    def finish(self, doc: DocumentRef) -> None:
        self._delete_where(
            [{"term": {"document_id": doc.document_id}}],
            must_not=[{"term": {"content_hash": doc.content_hash}}],
        )

    def delete(self, conn: Connection, tenant_id: str, document_id: str) -> None:
        self._delete_where([{"term": {"tenant_id": tenant_id}}, {"term": {"document_id": document_id}}])

    def _delete_where(
        self, filters: list[dict[str, Any]], must_not: list[dict[str, Any]] | None = None
    ) -> None:
        # Search for ids, then bulk-delete them: Serverless has no _delete_by_query.
        from opensearchpy import helpers

        self.ensure_index()
        query = {"bool": {"filter": filters, "must_not": must_not or []}}
        for regional in self.regions:
            for _ in range(1000):
                found = regional.client.search(
                    index=self.index, body={"size": 500, "_source": False, "query": query}
                )["hits"]["hits"]
                if not found:
                    break
                actions = [{"_op_type": "delete", "_index": self.index, "_id": hit["_id"]} for hit in found]
                helpers.bulk(
                    regional.client,
                    actions,
                    max_retries=4,
                    initial_backoff=1,
                    raise_on_error=False,
                    **self._refresh_args(),
                )
                if not self.refresh:
                    break  # deletions show only after a refresh; the generation check covers the gap

    def search(self, query: SearchQuery, *, hybrid: bool = False) -> list[Hit]:
        if query.k <= 0:
            return []
        self.ensure_index()
        size = query.k * 2  # room for hits the generation check drops
        client = self.reader.client
        raw = client.search(index=self.index, body=knn_query_body(query, size))["hits"]["hits"]
        by_vector = [_hit(h, cosine_from_score(float(h["_score"]))) for h in raw]
        hits = by_vector
        if hybrid and query.text and query.text.strip():
            raw_words = client.search(index=self.index, body=keyword_query_body(query, size))["hits"]["hits"]
            by_words = [
                _hit(h, _cosine(query.vector, h["_source"].get("embedding") or [])) for h in raw_words
            ]
            hits = fuse_by_rank(by_vector, by_words, k=size)
        return self._current(query.tenant_id, hits)[: query.k]

    def _current(self, tenant_id: str, hits: list[Hit]) -> list[Hit]:
        """Hits of the generation PostgreSQL records, with the document's current title."""
        if not hits:
            return []
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT id::text AS id, content_hash, title, source FROM documents"
                " WHERE tenant_id = %s AND id = ANY(%s::uuid[])",
                (tenant_id, sorted({h.document_id for h in hits})),
            ).fetchall()
        current = {row["id"]: row for row in rows}
        kept = []
        for hit in hits:
            row = current.get(hit.document_id)
            if row is not None and row["content_hash"] == hit.generation:
                kept.append(
                    Hit(hit.document_id, row["title"], hit.ordinal, hit.text, row["source"], hit.score)
                )
        return kept

    def close(self) -> None:
        for regional in self.regions:
            regional.client.close()


def _hit(raw: dict[str, Any], score: float) -> Hit:
    source = raw["_source"]
    return Hit(
        document_id=source["document_id"],
        title=source.get("title", ""),
        ordinal=int(source["ordinal"]),
        text=source["text"],
        source=source.get("source"),
        score=score,
        generation=source["content_hash"],
    )


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b) or not a:
        return 0.0
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
