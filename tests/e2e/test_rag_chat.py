"""Retrieval end to end: `chatstack ingest` into the running service's database, then a question over
the WebSocket gets an answer that quotes and cites the ingested document; another tenant gets none."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatstack.client import ChatClient
from tests.helpers.service import Service

pytestmark = pytest.mark.e2e
DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


@pytest.fixture(scope="module")
def ingested(service: Service) -> str:
    tenant = "t-rag-e2e"
    done = subprocess.run(
        [sys.executable, "-m", "chatstack.cli", "ingest", str(DOC), "--tenant", tenant,
         "--data-dir", str(service.data_dir)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return tenant


async def test_an_answer_cites_the_ingested_document(service: Service, ingested: str) -> None:
    token = service.token(user="reader", tenant=ingested)
    async with await ChatClient.connect(service.websocket, token=token) as client:
        reply = await client.send("How long do the frames of an answer stay in the Redis stream for resume?")
        answer = await reply.text()
    assert reply.done is not None and reply.done.citations
    assert {Path(c.source or "").name for c in reply.done.citations} == {"protocol.md"}
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", answer)}
    assert cited and cited <= {c.index for c in reply.done.citations}, answer  # cites what it was given
    assert "15 min" in answer  # and quotes the passage that answers


async def test_another_tenant_gets_no_passages_of_that_document(service: Service, ingested: str) -> None:
    token = service.token(user="reader", tenant="t-rag-other")
    async with await ChatClient.connect(service.websocket, token=token) as client:
        reply = await client.send("How long do the frames of an answer stay in the Redis stream for resume?")
        await reply.text()
    assert reply.done is not None and reply.done.citations == []
