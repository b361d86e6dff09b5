"""OpenSearch store: request bodies checked against the documented k-NN shapes, SigV4 signing, and a
contract suite against a real OpenSearch when OPENSEARCH_URL is set (skipped, saying so, otherwise).

Documented shapes: the k-NN index settings and `knn_vector` mapping with a `method` of
name/engine/space_type/parameters; efficient filtering with `filter` inside the `knn` clause
(Faiss, OpenSearch >= 2.9); Faiss inner-product scores (ip > 0: 1 + ip; else 1 / (1 - ip)).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from lambdas.adapters.db import Database
from lambdas.rag.embeddings import LocalEmbedder
from lambdas.rag.ingest import IngestService
from lambdas.rag.retriever import Retriever
from lambdas.rag.stores.base import SearchQuery
from lambdas.rag.stores.opensearch import (
    OpenSearchStore,
    cosine_from_score,
    index_body,
    keyword_query_body,
    knn_query_body,
    make_client,
    region_of,
)
from tests.functional.conftest_rag import *  # noqa: F403  (the fixtures)
from tests.functional.conftest_rag import DATA, document_rows

OPENSEARCH_URL = os.environ.get("OPENSEARCH_URL", "")


def test_the_index_maps_a_faiss_hnsw_knn_vector_and_keyword_filters() -> None:
    body = index_body(384)
    assert body["settings"]["index"]["knn"] is True
    field = body["mappings"]["properties"]["embedding"]
    assert field == {
        "type": "knn_vector",
        "dimension": 384,
        "method": {
            "name": "hnsw",
            "engine": "faiss",
            "space_type": "innerproduct",
            "parameters": {"m": 16, "ef_construction": 128},
        },
    }
    props = body["mappings"]["properties"]
    assert {props[f]["type"] for f in ("tenant_id", "document_id", "content_hash", "source")} == {"keyword"}
    assert props["text"]["type"] == "text"


def test_the_knn_query_filters_by_tenant_inside_the_knn_clause() -> None:
    query = SearchQuery(tenant_id="t1", vector=[0.5, 0.5], k=4, document_ids=["d1"])
    body = knn_query_body(query, 8)
    assert body["size"] == 8
    knn = body["query"]["knn"]["embedding"]
    assert knn["vector"] == [0.5, 0.5] and knn["k"] == 8
    assert knn["filter"] == {
        "bool": {"filter": [{"term": {"tenant_id": "t1"}}, {"terms": {"document_id": ["d1"]}}]}
    }
    assert "embedding" not in body["_source"]["includes"]


def test_the_keyword_query_is_a_filtered_match_that_returns_the_vectors() -> None:
    body = keyword_query_body(SearchQuery(tenant_id="t1", vector=[1.0], k=3, text="bee space"), 6)
    assert body["query"]["bool"]["must"] == [{"match": {"text": {"query": "bee space"}}}]
    assert body["query"]["bool"]["filter"] == [{"term": {"tenant_id": "t1"}}]
    assert "embedding" in body["_source"]["includes"]


@pytest.mark.parametrize("cosine", [0.9, 0.3, 0.0, -0.4])
def test_faiss_inner_product_scores_convert_back_to_cosine(cosine: float) -> None:
    score = 1 + cosine if cosine > 0 else 1 / (1 - cosine)
    assert cosine_from_score(score) == pytest.approx(cosine)


def test_endpoints_are_signed_for_their_service_and_region(monkeypatch: pytest.MonkeyPatch) -> None:
    assert region_of("https://abc123.eu-west-1.aoss.amazonaws.com", "us-east-1") == ("eu-west-1", "aoss")
    assert region_of("https://search-x-abc.us-west-2.es.amazonaws.com", "us-east-1") == ("us-west-2", "es")
    assert region_of("http://localhost:9200", "us-east-1") == ("us-east-1", None)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    client = make_client("https://abc123.eu-west-1.aoss.amazonaws.com", "us-east-1")
    auth = client.transport.get_connection().http_auth
    headers = auth("GET", "https://abc123.eu-west-1.aoss.amazonaws.com/chatstack-chunks/_search", b"{}", {})
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/aoss/aws4_request" in headers["Authorization"]
    assert "x-amz-content-sha256" in {k.lower() for k in headers}  # Serverless requires the payload hash
    assert make_client("http://localhost:9200", "us-east-1").transport.get_connection().http_auth is None


@pytest.fixture(scope="module")
def opensearch_store(rag_db: Database) -> Iterator[OpenSearchStore]:
    if not OPENSEARCH_URL:
        pytest.skip(
            "OpenSearch contract suite skipped: set OPENSEARCH_URL (e.g. http://localhost:9200) to run it."
        )
    index = f"chatstack-test-{uuid.uuid4().hex[:8]}"
    store = OpenSearchStore.from_endpoints(
        OPENSEARCH_URL, db=rag_db, region="us-east-1", index=index, refresh=True
    )
    store.ensure_index()
    yield store
    for regional in store.regions:
        regional.client.indices.delete(index=index, ignore=[404])
    store.close()


def test_contract_ingest_search_replace_and_delete_on_a_real_opensearch(
    opensearch_store: OpenSearchStore, rag_db: Database, embedder: LocalEmbedder, tenant: str
) -> None:
    service = IngestService(rag_db, embedder, opensearch_store)
    retriever = Retriever(embedder, opensearch_store)
    for name in ("coffee-brewing.txt", "beekeeping.md"):
        service.ingest_file(tenant_id=tenant, source=name, data=(DATA / name).read_bytes())
    other = f"{tenant}-other"
    service.ingest_file(tenant_id=other, source="solar.md", data=(DATA / "home-solar.md").read_bytes())
    found = retriever.retrieve(
        tenant_id=tenant, query="How much pressure does an espresso machine use?", k=3, min_score=0.0
    )
    assert found and found[0].source == "coffee-brewing.txt" and "nine bars" in found[0].text
    assert all(
        p.source != "solar.md"
        for p in retriever.retrieve(tenant_id=tenant, query="solar inverter", k=10, min_score=-1.0)
    )
    vector = embedder.embed(["solar inverter"])[0]
    assert opensearch_store.search(SearchQuery(tenant, vector, 5, document_ids=[]), hybrid=True) == []
    # filtered k-NN still returns k results of the tenant
    assert len(opensearch_store.search(SearchQuery(tenant, vector, 5))) == 5
    # a changed file replaces its chunks
    changed = service.ingest_text(
        tenant_id=tenant, source="coffee-brewing.txt", text="Tea is brewed at 80 degrees."
    )
    assert changed.replaced
    hits = opensearch_store.search(SearchQuery(tenant, embedder.embed(["tea"])[0], 20))
    coffee = [h for h in hits if h.document_id == changed.document_id]
    assert [h.text for h in coffee] == ["Tea is brewed at 80 degrees."]
    # delete
    for row in document_rows(rag_db, tenant):
        assert service.delete_document(tenant, row["id"])
    assert opensearch_store.search(SearchQuery(tenant, vector, 5)) == []
