"""The benchmarks' fake model speaks the LMI `/invocations` contract as the service's own parser reads
it (chat.completion.chunk JSON lines, finish reason, usage-only last chunk), at its stated timing."""

from __future__ import annotations

import time
from pathlib import Path

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


def test_the_fake_model_takes_a_new_timing_for_later_answers_and_counts_requests() -> None:
    """`bench overhead --floor` slows the fake model down for one phase and back, and checks through the
    request count that every chat reached the model within its first window."""
    with TestClient(create_app(ttft_ms=5, token_ms=5)) as client:
        assert client.get("/timing").json() == {"ttft_ms": 5.0, "token_ms": 5.0, "requests": 0}
        answer = client.put("/timing", json={"ttft_ms": 300, "token_ms": 1})
        assert answer.json() == {"ttft_ms": 300.0, "token_ms": 1.0, "requests": 0}
        started = time.perf_counter()
        client.post("/invocations", json={"messages": [], "max_tokens": 2})
        assert time.perf_counter() - started >= 0.3
        assert client.get("/timing").json()["requests"] == 1


def test_the_floor_is_half_the_burst_times_the_cpu_per_chat_over_the_cores() -> None:
    """The median of N chats sent at once (the ceil(N/2)-th first token) needs that many chats' CPU
    before it, shared by the cores, plus the model's own time to first token."""
    from chatstack.bench.overhead import Floor

    assert Floor.bound_ms(50, 8.0, 2, 20.0) == 25 * 8.0 / 2 + 20.0
    assert Floor.bound_ms(5, 10.0, 1, 0.0) == 30.0  # the third of five
    assert Floor.bound_ms(50, 8.0, 4, 20.0) == 70.0


def test_posts_are_counted_per_stream_second_and_per_thousand_tokens() -> None:
    run = Run(chats=[Chat(0.1, 6, 300, 2.0), Chat(0.2, 4, 200, 3.0)], failures=1, wall_s=5.0)
    figures = run.figures()
    assert figures["posts_per_stream_s"] == 2.0  # 10 deltas over 5 stream-seconds
    assert figures["posts_per_1k_tokens"] == 20.0  # 10 deltas for 500 tokens
    assert figures["chats_per_s"] == 0.4 and figures["failures"] == 1


def test_the_cpu_meter_counts_a_group_and_with_tree_its_children(tmp_path: Path) -> None:
    """The per-chat CPU figures of `bench overhead`: CPU burnt in a child process shows in a group
    that counts the tree, not in one that counts the parent alone; an idle process costs nothing."""
    import subprocess
    import sys
    import time

    from chatstack.bench.overhead import CpuMeter

    go = tmp_path / "go"
    child = (
        "import os, time\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.4: pass\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {child!r}])"]
    )
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        import psutil

        deadline = time.monotonic() + 20
        while not psutil.Process(parent.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        meter = CpuMeter({"flat": [parent.pid], "tree": [parent.pid], "idle": [idle.pid]},
                         tree=frozenset({"tree"}))
        meter.start()
        go.touch()
        while time.monotonic() < deadline:  # the child has burnt its 0.4 s
            kids = psutil.Process(parent.pid).children()
            if kids and sum(kids[0].cpu_times()[:2]) >= 0.4:
                break
            time.sleep(0.05)
        figures = meter.per_chat_ms(2)
    finally:
        for p in psutil.Process(parent.pid).children():
            p.kill()
        parent.kill()
        idle.kill()
    assert figures["tree"] >= 150  # 0.4 s over 2 chats, less what the child spent before `start`
    assert figures["flat"] < 50 and figures["idle"] < 50
    assert figures["total"] == round(figures["flat"] + figures["tree"] + figures["idle"], 2)


def test_services_per_model_counts_the_services_and_not_the_client() -> None:
    """The column docs/benchmarks.md compares runs by: the service's processes over the model's."""
    from chatstack.bench.overhead import services_per_model

    cpu = {"gateway": 8.0, "lambda hosts": 28.0, "postgres": 3.5, "redis": 0.5, "model": 5.0,
           "client": 2.0, "total": 47.0}
    assert services_per_model(cpu) == 8.0
    assert services_per_model({**cpu, "client": 50.0}) == 8.0
    assert services_per_model({**cpu, "model": 0.0}) is None  # an external model on another host
