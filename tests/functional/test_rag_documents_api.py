"""`/v1/documents` over real HTTP (uvicorn on a free port) against the embedded PostgreSQL.

Authentication is the lead's concern and has its own tests: here the caller dependency reads the
tenant from a header so that two tenants can be exercised; everything after it is the real path.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import Header

from lambdas.adapters.auth import Identity
from lambdas.adapters.db import Database
from lambdas.api.app import create_app
from lambdas.api.deps import get_caller
from lambdas.api.routers.documents import get_ingest
from lambdas.rag.embeddings import LocalEmbedder
from lambdas.rag.ingest import IngestService
from lambdas.rag.stores.pgvector import PgVectorStore
from tests.functional.conftest_rag import *  # noqa: F403  (the fixtures)
from tests.functional.conftest_rag import DATA, chunk_rows, document_rows, many_page_pdf, minimal_pdf


@pytest.fixture(scope="module")
def api(rag_db: Database, embedder: LocalEmbedder) -> Iterator[str]:
    app = create_app()
    service = IngestService(rag_db, embedder, PgVectorStore(rag_db), max_bytes=200_000)

    def caller(x_test_tenant: str = Header()) -> Identity:
        scopes = frozenset({"chat", "documents:write"})
        return Identity(tenant_id=x_test_tenant, user_id="tester", scopes=scopes)

    app.dependency_overrides[get_caller] = caller
    app.dependency_overrides[get_ingest] = lambda: service
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


def test_upload_list_and_delete_a_document(api: str, rag_db: Database, tenant: str) -> None:
    headers = {"x-test-tenant": tenant}
    with httpx.Client(base_url=api, headers=headers, timeout=60) as http:
        created = http.post(
            "/v1/documents",
            files={"file": ("bees.md", (DATA / "beekeeping.md").read_bytes(), "text/markdown")},
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["title"] == "Keeping Bees in a Small Garden" and body["chunks"] >= 2
        assert body["deduplicated"] is False

        again = http.post("/v1/documents", files={"file": ("bees.md", (DATA / "beekeeping.md").read_bytes())})
        assert again.status_code == 200 and again.json()["deduplicated"] is True
        assert again.json()["id"] == body["id"]

        text = http.post(
            "/v1/documents", json={"source": "memo", "title": "Memo", "text": "Lunch is at noon."}
        )
        assert text.status_code == 201 and text.json()["chunks"] == 1

        pdf = http.post(
            "/v1/documents", files={"file": ("m.pdf", minimal_pdf(["Hello from a PDF."]), "application/pdf")}
        )
        assert pdf.status_code == 201, pdf.text

        listed = http.get("/v1/documents").json()["items"]
        assert sorted(d["source"] for d in listed) == ["bees.md", "m.pdf", "memo"]

        assert http.delete(f"/v1/documents/{body['id']}").status_code == 204
        assert http.delete(f"/v1/documents/{body['id']}").status_code == 404
    assert "bees.md" not in {d["source"] for d in document_rows(rag_db, tenant)}
    assert all(r["source"] != "bees.md" for r in chunk_rows(rag_db, tenant))


def test_another_tenants_document_is_not_found(api: str, rag_db: Database, tenant: str) -> None:
    with httpx.Client(base_url=api, timeout=60) as http:
        made = http.post(
            "/v1/documents",
            headers={"x-test-tenant": tenant},
            json={"source": "private", "text": "Only mine."},
        )
        doc_id = made.json()["id"]
        intruder = {"x-test-tenant": f"{tenant}-intruder"}
        assert http.get("/v1/documents", headers=intruder).json()["items"] == []
        gone = http.delete(f"/v1/documents/{doc_id}", headers=intruder)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "NOT_FOUND"
    assert len(document_rows(rag_db, tenant)) == 1


@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        ({"files": {"file": ("empty.txt", b"")}}, 400, "empty"),
        ({"files": {"file": ("x.exe", b"MZ\x90\x00")}}, 400, "unsupported"),
        ({"files": {"file": ("bad.pdf", b"%PDF-1.4 garbage")}}, 400, "pdf"),
        ({"files": {"file": ("big.txt", b"a " * 150_000)}}, 413, "limit"),
        ({"json": {"source": "s"}}, 400, "text"),
        ({"json": {"source": "s", "text": "   "}}, 400, "empty"),
        ({"content": b"plain body", "headers": {"content-type": "text/plain"}}, 400, "multipart"),
        ({"data": {"source": "x"}, "files": {"other": ("a.txt", b"hi")}}, 400, "file"),
    ],
)
def test_bad_uploads_get_a_4xx_with_a_reason_and_store_nothing(
    api: str,
    rag_db: Database,
    tenant: str,
    kwargs: dict,
    status: int,
    fragment: str,  # type: ignore[type-arg]
) -> None:
    headers = {"x-test-tenant": tenant, **kwargs.pop("headers", {})}
    with httpx.Client(base_url=api, timeout=60) as http:
        response = http.post("/v1/documents", headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"].lower()
    assert document_rows(rag_db, tenant) == []


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("late.md", b"Filler line.\n" * 6000 + b"# Heading \x00\n"),
        ("late.html", b"<p>" + b"Filler line. " * 6000 + b"</p><title>T\x00itle</title>"),
        ("invoice\u202etxt.exe.txt", b"Plain text."),
    ],
)
def test_nul_late_in_a_file_or_a_bidi_file_name_is_a_400_not_a_500(
    api: str, rag_db: Database, tenant: str, name: str, data: bytes
) -> None:
    with httpx.Client(base_url=api, headers={"x-test-tenant": tenant}, timeout=60) as http:
        response = http.post("/v1/documents", files={"file": (name, data, "application/octet-stream")})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "BAD_REQUEST"
        # the connection still serves the next request (it was reset after the 500)
        nul_title = minimal_pdf(["Quarterly numbers."], info="<< /Title <FEFF0041000000420007> >>")
        pdf = http.post("/v1/documents", files={"file": ("t.pdf", nul_title, "application/pdf")})
        assert pdf.status_code == 201 and pdf.json()["title"] == "AB", pdf.text
    assert [d["source"] for d in document_rows(rag_db, tenant)] == ["t.pdf"]


def test_a_pdf_bomb_is_a_413_within_seconds(api: str, rag_db: Database, tenant: str) -> None:
    """A 10.7 KB PDF whose 60 pages share one 640 KB content stream: was 413 after 144 s of CPU."""
    bomb = many_page_pdf([b"BT /F1 12 Tf 72 720 Td " + b"(ab) Tj " * 80000 + b"ET"], 60)
    started = time.monotonic()
    with httpx.Client(base_url=api, headers={"x-test-tenant": tenant}, timeout=60) as http:
        response = http.post("/v1/documents", files={"file": ("b.pdf", bomb, "application/pdf")})
    assert response.status_code == 413 and response.json()["error"]["code"] == "TOO_LARGE", response.text
    assert time.monotonic() - started < 3.0
    assert document_rows(rag_db, tenant) == []
