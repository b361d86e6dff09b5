"""Lambda timeouts and hung children, against a real `chatstack up` (real WebSocket clients, the real
handlers in Lambda host processes, embedded PostgreSQL and Redis, the local model server):

- a worker invocation that outlives the worker's (shortened) timeout ends as Lambda ends it: the host
  that ran it is torn down, so nothing of it acts afterwards, and the SQS stand-in delivers the job
  again, which completes the answer once;
- a Lambda host that is alive but answers nothing (SIGSTOP) is killed and replaced by `up` within
  its liveness probe's threshold, and chats work again;
- so is the embedded PostgreSQL (its postmaster and backends SIGSTOPped, never continued): killed
  with every backend and started again, the chats in flight end in a frame, and a new chat works;
- a burst of 50 chats, and a big write, do not make a busy host or PostgreSQL miss its probes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from chatstack.chaos import ServiceDir, chat_works
from chatstack.chaos.chats import PROMPT as ASK
from chatstack.chaos.chats import Follow
from chatstack.client import ChatClient
from chatstack.local.process import pid_alive
from tests.helpers.service import start_service, stop_service

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


WORKER_TIMEOUT_S = 8
PROBE_INTERVAL_S = 1
PROBE_FAILURES = 3


def serve(data: Path, env: dict[str, str]) -> Iterator[ServiceDir]:
    # 20 tokens/s: an answer streams for a few seconds. RAG off: a restart would wait for its model.
    first = start_service(data, "--token-rate", "20", env={"CHATSTACK_RAG_ENABLED": "false", **env})
    service = ServiceDir(data)
    yield service
    service.stop()
    stop_service(first)


@pytest.fixture(scope="module")
def timeout_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceDir]:
    # The worker's timeout cut to 8 s (an answer takes a few); a short lease, so that the delivery
    # after a timed-out one does not wait long for the dead generation's lease; no liveness probes
    # (the model is stopped on purpose, longer than a probe threshold).
    env = {
        "CHATSTACK_FUNCTION_TIMEOUTS": f"worker={WORKER_TIMEOUT_S}",
        "CHATSTACK_GENERATION_LEASE_S": "3",
        "CHATSTACK_LIVENESS_FAILURES": "0",
    }
    yield from serve(tmp_path_factory.mktemp("timeouts") / "data", env)


@pytest.fixture(scope="module")
def probed_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceDir]:
    env = {
        "CHATSTACK_LIVENESS_INTERVAL_S": str(PROBE_INTERVAL_S),
        "CHATSTACK_LIVENESS_FAILURES": str(PROBE_FAILURES),
    }
    yield from serve(tmp_path_factory.mktemp("hangs") / "data", env)


async def until(condition: object, timeout_s: float, what: str) -> float:
    """Seconds until `condition()` held; fails naming `what` after `timeout_s`."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout_s, f"{what} not within {timeout_s:g} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def lambda_pids(service: ServiceDir) -> dict[str, int]:
    return {name: pid for name, pid in service.children().items() if name.startswith("lambda-")}


def postgres_pids(service: ServiceDir) -> list[int]:
    """The postmaster and every process it started (backends, auxiliary processes)."""
    postmaster = service.children()["postgres"]
    return [postmaster, *(p.pid for p in psutil.Process(postmaster).children(recursive=True))]


def database_url(service: ServiceDir) -> str:
    """The embedded PostgreSQL's URL: its socket directory is line 5 of postmaster.pid."""
    socket_dir = (service.data_dir / "pg" / "postmaster.pid").read_text().splitlines()[4]
    return f"postgresql://postgres:@/postgres?host={socket_dir}"


async def stored_answers(service: ServiceDir, user: str, conversation_id: str, request_id: str) -> list[str]:
    headers = {"Authorization": f"Bearer {service.token(user)}"}
    async with httpx.AsyncClient(base_url=service.base, timeout=10) as rest:
        response = await rest.get(f"/v1/conversations/{conversation_id}/messages", headers=headers)
    response.raise_for_status()
    items = response.json()["items"]
    return [m["content"] for m in items if m["requestId"] == request_id and m["role"] == "assistant"]


async def test_a_worker_past_its_timeout_is_torn_down_and_the_job_delivered_again_completes(
    timeout_service: ServiceDir,
) -> None:
    service = timeout_service
    assert await chat_works(service, timeout=60)
    user, request_id = f"timeout-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    follow = await Follow.open(service, user, request_id)
    try:
        await follow.client.send(ASK, request_id=request_id)
        ack = await asyncio.wait_for(follow.reply.ack, 10)
        await until(lambda: follow.reply.first_delta_at is not None, 20, "the first delta")
        workers = {name: service.children()[name] for name in service.worker_hosts()}
        assert workers, "no Lambda host streams from the model"
        # GIVEN the worker invocation waits on a model that answers nothing (the model's own idle
        # timeout, 25 s, is longer than the worker's 8 s)
        service.kill("model", signal.SIGSTOP)
        try:
            # THEN at the worker's timeout its host is torn down (within the 8 s, plus the time the
            # answer had streamed before the stop, plus slack for a loaded machine)
            await until(
                lambda: not any(pid_alive(pid) for pid in workers.values()),
                WORKER_TIMEOUT_S + 6,
                "the timed-out worker's host exit",
            )
        finally:
            service.kill("model", signal.SIGCONT)
        # AND the job is delivered again and the answer completes on the same connection
        outcome, _ = await follow.end(60)
        assert outcome == "done", follow.reply.error
    finally:
        await follow.close()
    # AND it is stored once, and the host said why it went (Lambda's log line)
    answers = await stored_answers(service, user, ack.conversation_id, request_id)
    assert len(answers) == 1 and answers[0] == follow.reply.text_so_far
    log = (service.data_dir.parent / f"{service.data_dir.name}.log").read_text()
    assert f"Task timed out after {WORKER_TIMEOUT_S}.00 seconds (worker); the Lambda host exits" in log


async def test_a_burst_of_50_chats_does_not_make_a_busy_host_miss_its_probes(
    probed_service: ServiceDir,
) -> None:
    service = probed_service
    assert await chat_works(service, timeout=60)
    before = lambda_pids(service)

    async def one(index: int) -> str:
        async with await ChatClient.connect(
            service.websocket, token=service.token(f"burst-{index}"), open_timeout=30
        ) as client:
            reply = await client.send(ASK)
            return await reply.text(timeout=120)

    postmaster = service.children()["postgres"]
    answers = await asyncio.gather(*(one(i) for i in range(50)))
    assert all(answers)
    assert lambda_pids(service) == before  # no host was taken for hung
    assert service.children()["postgres"] == postmaster  # nor PostgreSQL


async def test_a_big_write_does_not_make_postgresql_miss_its_probes(probed_service: ServiceDir) -> None:
    service = probed_service
    postmaster = service.children()["postgres"]
    url = database_url(service)

    def write(table: str) -> int:
        """Rows of ~300 bytes in batches of 200 000, WAL and all, for 3 probe thresholds."""
        rows = 0
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"create table {table} (n int, text text)")
            try:
                started = time.monotonic()
                while time.monotonic() - started < PROBE_INTERVAL_S * PROBE_FAILURES * 3:
                    conn.execute(
                        f"insert into {table} select g, repeat(md5(g::text), 9) "
                        "from generate_series(1, 200000) g"
                    )
                    rows += 200_000
            finally:
                conn.execute(f"drop table {table}")
        return rows

    # GIVEN two sessions writing as fast as they can (a document ingest's bulk writes, standing in)
    rows = await asyncio.gather(*(asyncio.to_thread(write, f"liveness_load_{i}") for i in range(2)))
    # THEN PostgreSQL was left running, and it did answer chats
    assert all(rows)
    assert service.children()["postgres"] == postmaster
    assert await chat_works(service, timeout=30)


async def test_a_lambda_host_that_stops_answering_is_replaced_and_chats_work_again(
    probed_service: ServiceDir,
) -> None:
    service = probed_service
    assert await chat_works(service, timeout=60)
    stopped = lambda_pids(service)
    assert len(stopped) == 2
    # GIVEN every Lambda host is alive but answers nothing
    for name in stopped:
        service.kill(name, signal.SIGSTOP)
    # THEN `up` kills each within its probes' threshold (3 probes of 1 s, plus one interval's phase and
    # slack for a loaded machine) and starts a new one
    gone = await until(
        lambda: not any(pid_alive(pid) for pid in stopped.values()),
        PROBE_INTERVAL_S * (PROBE_FAILURES + 1) + 3,
        "the stopped hosts' kill",
    )

    # (runtime.json names a restarted host once it is ready)
    def restarted() -> bool:
        ready = {n: p for n, p in service.info().get("children", {}).items() if n.startswith("lambda-")}
        return ready.keys() == stopped.keys() and not set(ready.values()) & set(stopped.values())

    await until(restarted, 60, "the new hosts")
    # AND a new chat works again
    assert await chat_works(service, timeout=30), f"no chat after the hosts were replaced ({gone:.1f} s)"


async def test_a_postgresql_that_stops_answering_is_killed_with_its_backends_and_chats_work_again(
    probed_service: ServiceDir,
) -> None:
    service = probed_service
    assert await chat_works(service, timeout=60)
    follows = []
    stopped: list[int] = []
    try:
        for _ in range(3):
            user, request_id = f"pg-hang-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
            follow = await Follow.open(service, user, request_id)
            follows.append(follow)
            await follow.client.send(ASK, request_id=request_id)
        for follow in follows:
            await until(lambda f=follow: f.reply.first_delta_at is not None, 30, "the first delta")
        stopped.extend(postgres_pids(service))
        # GIVEN the postmaster and its backends alive, their sockets open, answering nothing, for good
        service.kill("postgres", signal.SIGSTOP)
        # THEN `up` kills the postmaster and every process it started (3 probes of 1 s, plus one
        # interval's phase and slack for a loaded machine)
        gone = await until(
            lambda: not any(pid_alive(pid) for pid in stopped),
            PROBE_INTERVAL_S * (PROBE_FAILURES + 1) + 3,
            "the stopped PostgreSQL's kill",
        )
        # AND starts it again (runtime.json names the new postmaster once it is ready)
        await until(
            lambda: service.info().get("children", {}).get("postgres") not in (None, stopped[0]),
            60,
            "the new PostgreSQL",
        )
        # AND each chat that was streaming ends in a frame, `done` or `error`, never hangs
        for follow in follows:
            outcome, _ = await follow.end(60)
            assert outcome in ("done", "error"), outcome
    finally:
        for follow in follows:
            await follow.close()
        for pid in stopped:  # the test failed: continue what is left, so that the service can stop
            if pid_alive(pid):
                os.kill(pid, signal.SIGCONT)
    # AND a new chat works again
    assert await chat_works(service, timeout=30), f"no chat after PostgreSQL was replaced ({gone:.1f} s)"
