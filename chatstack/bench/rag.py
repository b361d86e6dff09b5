"""`chatstack bench rag`: ingestion and query speed of retrieval on pgvector.

Three figures, measured separately because they have different limits:
- embedding throughput: chunks per second of the local MiniLM model on this machine's CPUs;
- store ingestion: chunks per second written into PostgreSQL with the HNSW index maintained, at
  10k and 100k chunks. The store part uses random unit vectors (embedding 100k chunks on two cores
  takes many minutes, and the vectors' values do not change the write path's cost);
- query latency p50/p99 of a tenant-filtered top-5 search (vector, and hybrid vector + keyword)
  at each size, plus the time to embed a query.
It runs against a throw-away embedded PostgreSQL unless --database-url is given.
"""

from __future__ import annotations

import json
import platform
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from chatstack.bench.overhead import summary
from chatstack.local.process import usable_cores

if TYPE_CHECKING:
    from chatstack.local.embedded import EmbeddedPostgres

WORDS = [f"w{n:04d}" for n in range(3000)]


def _unit(rng: random.Random, dim: int = 384) -> list[float]:
    v = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def _text(rng: random.Random, words: int = 120) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def embedding_throughput(n: int) -> dict[str, Any]:
    from lambdas.rag.chunking import chunk_text
    from lambdas.rag.embeddings import LocalEmbedder

    source = " ".join(
        f"Paragraph {i}: the service answers questions about documents it has indexed, with citations. "
        f"Each chunk holds about one hundred and sixty tokens of text and shares some with the next."
        for i in range(n * 4)
    )
    started = time.perf_counter()
    chunks = [c.text for c in chunk_text(source)][:n]
    chunk_s = time.perf_counter() - started
    model = LocalEmbedder()
    started = time.perf_counter()
    model.embed(["warm up"])
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    model.embed(chunks)
    embed_s = time.perf_counter() - started
    query_times = []
    for i in range(30):
        t0 = time.perf_counter()
        model.embed([f"How are citations returned for question {i}?"])
        query_times.append(time.perf_counter() - t0)
    return {
        "chunks": len(chunks),
        "model_load_s": round(load_s, 2),
        "chunking_chunks_per_s": round(len(chunks) / chunk_s),
        "embed_chunks_per_s": round(len(chunks) / embed_s, 1),
        "embed_query_ms": summary(query_times),
    }


def store_benchmark(url: str, sizes: list[int], queries: int, batch: int) -> list[dict[str, Any]]:
    from lambdas.adapters.db import Database
    from lambdas.rag.stores.base import DocumentRef, EmbeddedChunk, SearchQuery
    from lambdas.rag.stores.pgvector import PgVectorStore

    db = Database(url, max_size=2, deadline_s=600)  # bulk writes, ANALYZE and a cleanup of many rows
    db.migrate()
    store = PgVectorStore(db)
    rng = random.Random(42)
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    results = []
    written = 0
    try:
        for size in sorted(sizes):
            started = time.perf_counter()
            added = 0
            while written < size:
                n = min(batch, size - written)
                doc = DocumentRef(tenant, str(uuid.uuid4()), uuid.uuid4().hex, f"Bench {written}", None)
                chunks = [EmbeddedChunk(i, _text(rng), 121, _unit(rng)) for i in range(n)]
                with db.transaction() as conn:
                    conn.execute(
                        "INSERT INTO documents (id, tenant_id, source, title, content_hash, mime,"
                        " embedding_model, chunk_count)"
                        " VALUES (%s, %s, %s, %s, %s, 'text/plain', 'random', %s)",
                        (doc.document_id, tenant, doc.document_id, doc.title, doc.content_hash, n),
                    )
                    store.write(conn, doc, chunks)
                written += n
                added += n
            ingest_s = time.perf_counter() - started
            with db.transaction() as conn:
                conn.execute("ANALYZE chunks")
            timings: dict[str, list[float]] = {"vector": [], "hybrid": []}
            for mode in timings:
                for _ in range(queries):
                    query = SearchQuery(
                        tenant, _unit(rng), 5, text=" ".join(rng.choice(WORDS) for _ in range(4))
                    )
                    t0 = time.perf_counter()
                    hits = store.search(query, hybrid=mode == "hybrid")
                    timings[mode].append(time.perf_counter() - t0)
                    if len(hits) != 5:
                        raise click.ClickException(f"A {mode} query returned {len(hits)} hits, not 5.")
            row = {
                "chunks": size,
                "added": added,
                "ingest_s": round(ingest_s, 1),
                "ingest_chunks_per_s": round(added / ingest_s, 1),
                "query_ms_vector": summary(timings["vector"]),
                "query_ms_hybrid": summary(timings["hybrid"]),
            }
            click.echo(json.dumps(row))
            results.append(row)
    finally:
        with db.transaction() as conn:
            conn.execute("DELETE FROM documents WHERE tenant_id = %s", (tenant,))
        db.close()
    return results


@click.command()
@click.option("--sizes", default="10000,100000", show_default=True, help="Chunk counts to measure at.")
@click.option("--queries", default=200, show_default=True, help="Queries per size and mode.")
@click.option("--embed-chunks", default=512, show_default=True, help="Chunks to embed for the model figure.")
@click.option("--batch", default=1000, show_default=True, help="Chunks per document (one transaction each).")
@click.option(
    "--database-url", default=None, help="PostgreSQL with pgvector; default: a throw-away embedded one."
)
@click.option("--out", default=".bench/rag.json", show_default=True, type=click.Path(dir_okay=False))
def rag(sizes: str, queries: int, embed_chunks: int, batch: int, database_url: str | None, out: str) -> None:
    """Ingestion chunks/s and query latency p50/p99 on pgvector; embedding throughput separately."""
    levels = [int(s) for s in sizes.split(",") if s.strip()]
    report: dict[str, Any] = {
        "machine": {
            "cpus": usable_cores(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "note": "store figures use random unit vectors; embedding throughput is measured separately",
    }
    if embed_chunks > 0:
        report["embedding"] = embedding_throughput(embed_chunks)
        click.echo(json.dumps({"embedding": report["embedding"]}))
    scratch = None
    server: EmbeddedPostgres | None = None
    if not database_url:
        from chatstack.local.embedded import EmbeddedPostgres

        scratch = Path(tempfile.mkdtemp(prefix="chatstack-bench-"))
        server = EmbeddedPostgres(scratch / "pg")
        database_url = server.url
    try:
        report["pgvector"] = store_benchmark(database_url, levels, queries, batch)
    finally:
        if server is not None:
            server.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    click.echo(f"wrote {out}")
