"""Lambda timeouts and hung children, against a real `chatstack up` (real WebSocket clients, the real
handlers in Lambda host processes, embedded PostgreSQL and Redis, the local model server):

- a worker invocation that outlives the worker's (shortened) timeout ends as Lambda ends it: the host
  that ran it is torn down, so nothing of it acts afterwards, and the SQS stand-in delivers the job
  again, which completes the answer once;
- a Lambda host that is alive but answers nothing (SIGSTOP) is killed and replaced by `up` within
  its liveness probe's threshold, and chats work again;
- a burst of 50 chats does not make a busy host miss its probes.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
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

    answers = await asyncio.gather(*(one(i) for i in range(50)))
    assert all(answers)
    assert lambda_pids(service) == before  # no host was taken for hung


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
