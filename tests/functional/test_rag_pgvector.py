"""Ingestion and search on pgvector, against the embedded PostgreSQL (real pgvector 0.8 HNSW index)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence

import pytest

from lambdas.adapters import document_owners
from lambdas.adapters.db import Database
from lambdas.errors import NotFound
from lambdas.rag.embeddings import LocalEmbedder
from lambdas.rag.ingest import WRITE_DEADLINE_S, IngestService
from lambdas.rag.parsing import DocumentRejected
from lambdas.rag.retriever import Retriever
from lambdas.rag.stores.base import DocumentRef, EmbeddedChunk, SearchQuery, vector_literal
from lambdas.rag.stores.pgvector import _VECTOR_SQL, PgVectorStore
from tests.functional.conftest_rag import *  # noqa: F403  (the fixtures)
from tests.functional.conftest_rag import DATA, CountingEmbedder, chunk_rows, document_rows


def _unit(rng: random.Random, dim: int = 384) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(dim)]
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]


def _seed(db: Database, tenant_id: str, vectors: Sequence[Sequence[float]], *, title: str = "seed") -> str:
    """Write random-vector chunks for one document straight through the store (no model)."""
    store = PgVectorStore(db)
    doc_id = str(uuid.uuid4())
    with db.transaction(deadline_s=WRITE_DEADLINE_S) as conn:  # a bulk write, as the ingest's
        conn.execute(
            "INSERT INTO documents (id, tenant_id, source, title, content_hash, mime, embedding_model,"
            " chunk_count) VALUES (%s, %s, %s, %s, %s, 'text/plain', 'random', %s)",
            (doc_id, tenant_id, f"{title}-{doc_id}", title, doc_id, len(vectors)),
        )
        ref = DocumentRef(tenant_id, doc_id, doc_id, title, None)
        store.write(conn, ref, [EmbeddedChunk(i, f"{title} chunk {i}", 3, v) for i, v in enumerate(vectors)])
    return doc_id


def test_ingesting_a_markdown_file_stores_its_title_and_overlapping_chunks(
    pg_service: IngestService, rag_db: Database, tenant: str
) -> None:
    result = pg_service.ingest_file(
        tenant_id=tenant, source="beekeeping.md", data=(DATA / "beekeeping.md").read_bytes()
    )
    assert result.title == "Keeping Bees in a Small Garden"
    assert not result.deduplicated and not result.replaced
    rows = chunk_rows(rag_db, tenant)
    assert len(rows) == result.chunks >= 2
    assert [r["ordinal"] for r in rows] == list(range(result.chunks))
    # consecutive chunks share text (the overlap)
    assert rows[0]["text"][-40:].split()[-1] in rows[1]["text"]


def test_the_same_content_is_not_indexed_twice(
    pg_service: IngestService, rag_db: Database, tenant: str
) -> None:
    data = (DATA / "sourdough.md").read_bytes()
    first = pg_service.ingest_file(tenant_id=tenant, source="sourdough.md", data=data)
    again = pg_service.ingest_file(tenant_id=tenant, source="sourdough.md", data=data)
    assert again.deduplicated and again.document_id == first.document_id
    assert len(document_rows(rag_db, tenant)) == 1
    assert len(chunk_rows(rag_db, tenant)) == first.chunks


def test_the_same_content_under_a_new_source_is_a_document_of_its_own(
    rag_db: Database, embedder: LocalEmbedder, tenant: str
) -> None:
    """Was: the copy answered 200 with the original's id and source, nothing was stored under its name,
    and deleting the original lost the text for both names."""
    counting = CountingEmbedder(embedder)
    service = IngestService(rag_db, counting, PgVectorStore(rag_db))
    data = (DATA / "sourdough.md").read_bytes()
    first = service.ingest_file(tenant_id=tenant, source="sourdough.md", data=data)
    embedded = counting.texts
    copy = service.ingest_file(tenant_id=tenant, source="copies/sourdough-copy.md", data=data)
    assert not copy.deduplicated and not copy.replaced and copy.document_id != first.document_id
    assert copy.source == "copies/sourdough-copy.md" and copy.chunks == first.chunks
    assert counting.texts == embedded  # same text and title: the vectors were copied, not recomputed
    plain = service.ingest_file(tenant_id=tenant, source="b.txt", data=b"Zebra parcels are refunded by wire.")
    other = service.ingest_file(tenant_id=tenant, source="c.txt", data=b"Zebra parcels are refunded by wire.")
    assert other.document_id != plain.document_id and not other.deduplicated
    assert sorted(d["source"] for d in document_rows(rag_db, tenant)) == [
        "b.txt", "c.txt", "copies/sourdough-copy.md", "sourdough.md"
    ]
    assert service.delete_document(tenant, first.document_id)
    hits = Retriever(embedder, PgVectorStore(rag_db)).retrieve(
        tenant_id=tenant, query="How long does sourdough proof?", k=3, min_score=0.0
    )
    assert hits and {h.source for h in hits} <= {"copies/sourdough-copy.md", "b.txt", "c.txt"}
    assert len(chunk_rows(rag_db, tenant)) == copy.chunks + 2
    with rag_db.transaction() as conn:
        vectors = conn.execute(
            "SELECT d.source, c.embedding::text AS e FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE c.tenant_id = %s AND d.source IN ('b.txt', 'c.txt') ORDER BY d.source", (tenant,)
        ).fetchall()
    assert vectors[0]["e"] != vectors[1]["e"]  # titles b and c differ, and the title is embedded


def test_a_new_title_alone_is_a_write_that_re_embeds_the_chunks(
    pg_service: IngestService, rag_db: Database, embedder: LocalEmbedder, tenant: str
) -> None:
    """Was: 200 deduplicated, the title changed in place, the vectors kept the old title and the writer
    was not recorded."""
    text = "Economy class on flights under six hours; business class above."
    first = pg_service.ingest_text(tenant_id=tenant, source="policy5", title="Travel policy", text=text,
                                   writer="alice")
    planted = "Travel policy (APPROVED BY CEO: business class for all)"
    second = pg_service.ingest_text(tenant_id=tenant, source="policy5", title=planted, text=text,
                                    writer="dave")
    assert not second.deduplicated and second.replaced and second.document_id == first.document_id
    same = pg_service.ingest_text(tenant_id=tenant, source="policy5", title=planted, text=text, writer="eve")
    assert same.deduplicated
    with rag_db.transaction() as conn:
        assert document_owners.writers(conn, tenant_id=tenant, document_id=first.document_id) == (
            "alice", "dave"
        )
        stored = conn.execute(
            "SELECT embedding::text AS e FROM chunks WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    assert stored is not None
    got = [float(x) for x in stored["e"].strip("[]").split(",")]
    want = embedder.embed([f"{planted}\n{text}"])[0]
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-5


def test_the_writer_is_recorded_by_the_ingest_itself_and_the_cli_records_none(
    pg_service: IngestService, rag_db: Database, tenant: str
) -> None:
    made = pg_service.ingest_text(tenant_id=tenant, source="w.txt", text="First words.", writer="alice")
    with rag_db.transaction() as conn:
        assert document_owners.writers(conn, tenant_id=tenant, document_id=made.document_id) == (
            "alice", "alice"
        )
    pg_service.ingest_text(tenant_id=tenant, source="w.txt", text="Second words.")  # the CLI: no user
    with rag_db.transaction() as conn:
        owners = document_owners.writers(conn, tenant_id=tenant, document_id=made.document_id)
    assert owners == ("alice", None)


def test_a_delete_during_a_replacement_is_not_undone(
    rag_db: Database, embedder: LocalEmbedder, tenant: str
) -> None:
    """Was: the replacement finished with 201 and a new id, re-creating the document the user had just
    deleted (204). The delete here lands while the replacement's chunks are being embedded."""
    service = IngestService(rag_db, embedder, PgVectorStore(rag_db))
    first = service.ingest_text(tenant_id=tenant, source="victim.txt", text="Version one.", writer="alice")

    class DeleteWhileEmbedding(CountingEmbedder):
        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            assert service.delete_document(tenant, first.document_id)
            return super().embed(texts)

    racing = IngestService(rag_db, DeleteWhileEmbedding(embedder), PgVectorStore(rag_db))
    with pytest.raises(NotFound, match="deleted while this upload was replacing it") as caught:
        racing.ingest_text(tenant_id=tenant, source="victim.txt", text="Version two. " * 50, writer="bob")
    assert caught.value.status == 404
    assert document_rows(rag_db, tenant) == [] and chunk_rows(rag_db, tenant) == []
    again = service.ingest_text(tenant_id=tenant, source="victim.txt", text="Version two.", writer="bob")
    assert not again.replaced and again.document_id != first.document_id


def test_reingesting_a_changed_file_replaces_its_chunks(
    pg_service: IngestService, rag_db: Database, tenant: str
) -> None:
    first = pg_service.ingest_text(
        tenant_id=tenant, source="notes.txt", text="The ferry leaves at nine. " * 5
    )
    second = pg_service.ingest_text(
        tenant_id=tenant, source="notes.txt", text="The ferry now leaves at ten in the morning."
    )
    assert second.document_id == first.document_id and second.replaced
    texts = [r["text"] for r in chunk_rows(rag_db, tenant)]
    assert texts == ["The ferry now leaves at ten in the morning."]
    assert document_rows(rag_db, tenant)[0]["chunk_count"] == 1


def test_deleting_a_document_removes_its_chunks_and_only_for_its_tenant(
    pg_service: IngestService, rag_db: Database, tenant: str
) -> None:
    result = pg_service.ingest_text(tenant_id=tenant, source="a.txt", text="Alpha beta gamma. Delta epsilon.")
    assert not pg_service.delete_document("someone-else", result.document_id)
    assert not pg_service.delete_document(tenant, "not-a-uuid")
    assert pg_service.delete_document(tenant, result.document_id)
    assert document_rows(rag_db, tenant) == [] and chunk_rows(rag_db, tenant) == []
    assert not pg_service.delete_document(tenant, result.document_id)


def test_a_failed_write_leaves_nothing_half_indexed(rag_db: Database, tenant: str) -> None:
    """A model answering 3-dimensional vectors makes PostgreSQL refuse the chunks mid-transaction."""

    class ThreeDimensions:
        model_id = "three-d"
        dimension = 3

        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            return [[1.0, 0.0, 0.0] for _ in texts]

    service = IngestService(rag_db, ThreeDimensions(), PgVectorStore(rag_db))
    with pytest.raises(Exception, match="dimensions"):
        service.ingest_text(tenant_id=tenant, source="x.txt", text="Some text that will not be stored. " * 20)
    assert document_rows(rag_db, tenant) == [] and chunk_rows(rag_db, tenant) == []


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.md", b"", "empty"),
        ("blank.txt", b"   \n\n  ", "empty"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("latin1.txt", "café crème".encode("latin-1"), "binary"),
        ("slides.pptx", b"PK\x03\x04", "unsupported"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\ntrailer\n%%EOF", "broken_pdf"),
        ("fake.pdf", b"this is not a pdf", "broken_pdf"),
    ],
)
def test_bad_files_are_rejected_with_a_reason_and_leave_nothing(
    pg_service: IngestService, rag_db: Database, tenant: str, name: str, data: bytes, reason: str
) -> None:
    with pytest.raises(DocumentRejected) as caught:
        pg_service.ingest_file(tenant_id=tenant, source=name, data=data)
    assert caught.value.details["reason"] == reason
    assert caught.value.message.endswith(".")
    assert document_rows(rag_db, tenant) == []


def test_a_file_over_the_size_limit_is_rejected(
    rag_db: Database, embedder: LocalEmbedder, tenant: str
) -> None:
    service = IngestService(rag_db, embedder, PgVectorStore(rag_db), max_bytes=1000)
    with pytest.raises(DocumentRejected, match="limit") as caught:
        service.ingest_file(tenant_id=tenant, source="big.txt", data=b"word " * 400)
    assert caught.value.details["reason"] == "too_large"


def test_tenant_filter_still_returns_k_results_when_the_hnsw_index_serves_the_query(
    rag_db: Database, tenant: str
) -> None:
    """A 1% tenant searched through the HNSW graph (the tenant b-tree dropped inside a rolled-back
    transaction): a plain scan of ef_search=40 candidates finds almost none of the tenant's rows; the
    iterative scan keeps walking until k rows pass the filter."""
    rng = random.Random(7)
    _seed(rag_db, f"{tenant}-crowd", [_unit(rng) for _ in range(3000)], title="crowd")
    mine = _seed(rag_db, tenant, [_unit(rng) for _ in range(30)], title="mine")
    store = PgVectorStore(rag_db, ef_search=40)
    query = SearchQuery(tenant_id=tenant, vector=_unit(rng), k=10)
    with rag_db.transaction() as conn:
        conn.execute("DROP INDEX chunks_by_tenant")
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r["QUERY PLAN"]
            for r in conn.execute(
                "EXPLAIN " + _VECTOR_SQL.format(documents=""),
                {"vector": vector_literal(query.vector), "tenant": tenant, "k": 10},
            )
        )
        assert "chunks_embedding_hnsw" in plan
        hits = store.search_in(conn, query)
        conn.execute("SET LOCAL hnsw.iterative_scan = off")
        plain = conn.execute(
            _VECTOR_SQL.format(documents=""),
            {"vector": vector_literal(query.vector), "tenant": tenant, "k": 10},
        ).fetchall()
        conn.rollback()
    assert len(hits) == 10 and {h.document_id for h in hits} == {mine}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(plain) < 10  # what the iterative scan is there for


def test_tenant_filter_returns_k_results_on_the_planners_own_choice(rag_db: Database, tenant: str) -> None:
    rng = random.Random(8)
    _seed(rag_db, f"{tenant}-crowd", [_unit(rng) for _ in range(1000)], title="crowd")
    _seed(rag_db, tenant, [_unit(rng) for _ in range(12)], title="mine")
    hits = PgVectorStore(rag_db).search(SearchQuery(tenant_id=tenant, vector=_unit(rng), k=10))
    assert len(hits) == 10 and {h.title for h in hits} == {"mine"}


def test_queries_never_return_another_tenants_chunks_even_when_the_filter_matches_nothing(
    rag_db: Database, pg_service: IngestService, embedder: LocalEmbedder, tenant: str
) -> None:
    other = f"{tenant}-other"
    theirs = pg_service.ingest_file(
        tenant_id=other, source="coffee.txt", data=(DATA / "coffee-brewing.txt").read_bytes()
    )
    retriever = Retriever(embedder, PgVectorStore(rag_db))
    question = "How much pressure does an espresso machine use?"
    assert retriever.retrieve(tenant_id=other, query=question, k=3, min_score=0.0)
    assert retriever.retrieve(tenant_id=tenant, query=question, k=3, min_score=-1.0) == []
    vector = embedder.embed([question])[0]
    store = PgVectorStore(rag_db)
    for hybrid in (False, True):
        assert store.search(SearchQuery(tenant, vector, 5, text=question), hybrid=hybrid) == []
        # the other tenant's document id as a filter: still nothing
        query = SearchQuery(tenant, vector, 5, text=question, document_ids=[theirs.document_id])
        assert store.search(query, hybrid=hybrid) == []
        assert (
            store.search(SearchQuery(other, vector, 5, text=question, document_ids=[]), hybrid=hybrid) == []
        )
