"""Closing an OpenAI-style streamed answer cancels its generation (docs/protocol.md, "OpenAI-compatible
access": "Closing the stream cancels the generation"), against the shared real `chatstack up`
(answers at 50 tokens/s, so an answer streams for seconds): the client reads two chunks and closes the
connection; the stored answer ends `cancelled`.

Before the fix the disconnect was seen only when the thread that read the frames came back with the
next one, and the cancel waited for that generator to be collected: the answer ran to `stop`.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.helpers.service import Service

pytestmark = pytest.mark.e2e
# The extractive model quotes the conversation's sentences that share the question's words: a long
# answer (400 tokens at most: 8 s at 50 tokens/s).
QUESTION = " ".join(f"Closing stream sentence {i} mentions closing." for i in range(30)) + (
    " What about closing the stream?"
)


def _stored(service: Service, token: str, conversation_id: str) -> list[dict[str, object]]:
    r = httpx.get(f"{service.base}/v1/conversations/{conversation_id}/messages",
                  headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return list(r.json()["items"])


def test_closing_the_stream_cancels_the_generation(service: Service) -> None:
    token = service.token(user="sse-closer")
    conversation_id = ""
    chunks = 0
    with httpx.Client(base_url=service.base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        model = c.get("/v1/models").json()["data"][0]["id"]
        body = {"model": model, "stream": True, "max_tokens": 400,
                "messages": [{"role": "user", "content": QUESTION}]}
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    conversation_id = conversation_id or json.loads(line[6:])["conversation_id"]
                    chunks += 1
                    if chunks == 2:
                        break  # leaving the block closes the connection mid-answer
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answers = [m for m in _stored(service, token, conversation_id) if m["role"] == "assistant"]
        if answers and answers[0]["finishReason"] is not None:
            break
        time.sleep(0.2)
    assert [a["finishReason"] for a in answers] == ["cancelled"]
