"""The benchmarks' fake model speaks the LMI `/invocations` contract as the service's own parser reads
it (chat.completion.chunk JSON lines, finish reason, usage-only last chunk), at its stated timing."""

from __future__ import annotations

import time

from starlette.testclient import TestClient

from chatstack.bench.fake_model import create_app
from chatstack.bench.overhead import Chat, Run
from lambdas.adapters.model import ChunkParser


def test_the_fake_model_streams_what_the_model_client_parses_at_its_stated_pace() -> None:
    parser, chunks = ChunkParser(), []
    with TestClient(create_app(ttft_ms=20, token_ms=5)) as client:
        started = time.perf_counter()
        with client.stream(
            "POST", "/invocations", json={"messages": [], "max_tokens": 40, "stream": True}
        ) as r:
            assert r.status_code == 200
            for data in r.iter_bytes():
                chunks += parser.feed(data)
        elapsed = time.perf_counter() - started
    chunks += parser.close()
    text = [c for c in chunks if c.text]
    assert len(text) == 40 and text[0].text == " w0" and text[19].text == " w19."
    assert chunks[-1].finish_reason == "length" and chunks[-1].usage == (10, 40)
    assert elapsed >= 0.020 + 39 * 0.005


def test_posts_are_counted_per_stream_second_and_per_thousand_tokens() -> None:
    run = Run(chats=[Chat(0.1, 6, 300, 2.0), Chat(0.2, 4, 200, 3.0)], failures=1, wall_s=5.0)
    figures = run.figures()
    assert figures["posts_per_stream_s"] == 2.0  # 10 deltas over 5 stream-seconds
    assert figures["posts_per_1k_tokens"] == 20.0  # 10 deltas for 500 tokens
    assert figures["chats_per_s"] == 0.4 and figures["failures"] == 1
