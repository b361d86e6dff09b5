"""The supervisor's rules with real child processes (small Python programs), fast: restart after a
death with doubling delays, give up in one sentence when a child keeps dying, and children that
cannot outlive their parent even when it is killed with SIGKILL (tests/e2e/test_supervisor.py does
the same to the real children of `chatstack up`)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from chatstack.local.process import Child, ReadyProcess, pid_alive
from chatstack.local.supervisor import ChildKeepsDying, RestartPolicy, Supervisor

SERVES = "print('ready on http://x', flush=True); import time; time.sleep(60)"
FAST = RestartPolicy(first_delay_s=0.2, max_delay_s=0.4, limit=2, window_s=60, poll_s=0.05)


def child(program: str = SERVES) -> ReadyProcess:
    return ReadyProcess([sys.executable, "-c", program], "ready on ", "test child", name="child")


async def until(condition: object, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


def test_a_killed_child_is_restarted_and_the_runtime_is_told_both_ways(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[tuple[str, int | None]] = []

    async def scenario() -> None:
        c = child()
        c.wait_ready()
        first = c.pid
        sup = Supervisor(
            [c], FAST, lambda ch: events.append(("down", ch.pid)), lambda ch: events.append(("up", ch.pid))
        )
        task = asyncio.create_task(sup.run())
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await until(lambda: ("up", c.pid) in events and c.pid != first)
        assert sup.restarts == {"child": 1} and pid_alive(c.pid or 0) and not pid_alive(first)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        c.stop()

    with caplog.at_level(logging.WARNING, logger="chatstack.up"):
        asyncio.run(scenario())
    assert [kind for kind, _ in events] == ["down", "up"]
    assert "test child exited (code -9); restarting in 0.2 s" in caplog.messages


def test_a_child_that_keeps_dying_ends_supervision_with_one_sentence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> str:
        c = child()
        c.wait_ready()
        c.cmd = [sys.executable, "-c", "raise SystemExit(3)"]  # every restart fails at once
        sup = Supervisor([c], FAST, lambda ch: None, lambda ch: None)
        assert c.pid is not None
        os.kill(c.pid, signal.SIGKILL)
        with pytest.raises(ChildKeepsDying) as info:
            await asyncio.wait_for(sup.run(), 10)
        return str(info.value)

    with caplog.at_level(logging.WARNING, logger="chatstack.up"):
        message = asyncio.run(scenario())
    assert message == "chatstack up is stopping: test child died 3 times in 60 s (last exit code 3)."
    delays = [m.split("restarting in ")[1] for m in caplog.messages if "restarting in" in m]
    assert delays == ["0.2 s", "0.4 s"]  # doubling, capped at max_delay_s


PARENT = """
import sys, time
from chatstack.local.process import ReadyProcess
c = ReadyProcess([sys.executable, "-c", {program!r}], "ready on ", "grandchild")
c.wait_ready()
print(c.pid, flush=True)
time.sleep(60)
"""


def test_a_child_dies_with_its_parent_even_when_the_parent_gets_sigkill() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT.format(program=SERVES)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    grandchild = int(parent.stdout.readline())
    assert pid_alive(grandchild)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while pid_alive(grandchild):  # reparented to init, which reaps it
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.05)


def test_stop_ends_a_child_that_ignores_sigterm_with_sigkill() -> None:
    stubborn: Child = child("import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + SERVES)
    stubborn.wait_ready()
    started = time.monotonic()
    stubborn.stop(timeout_s=0.5)
    assert stubborn.poll() == -signal.SIGKILL and time.monotonic() - started < 5


def test_a_child_that_logs_a_lot_after_it_is_ready_never_blocks_on_its_stdout(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The Lambda hosts log to stdout (Powertools); an unread pipe would block them at 64 KiB."""
    chatty = child("print('ready on http://x', flush=True)\nfor i in range(50_000): print('log line', i)")
    chatty.wait_ready()
    assert chatty.proc is not None and chatty.proc.wait(timeout=20) == 0
    time.sleep(0.2)
    assert "log line 49999" in capfd.readouterr().err  # passed on to our stderr


def test_a_child_that_never_says_it_is_ready_is_reported_in_one_sentence() -> None:
    silent = child("import time; time.sleep(60)")
    with pytest.raises(SystemExit) as info:
        silent.wait_ready(timeout_s=0.5)
    silent.stop()
    assert str(info.value) == "The test child did not become ready in 0.5 s."


RECYCLES = "print('ready on http://x', flush=True); import time, os; time.sleep(0.3); os._exit(75)"
# A small HTTP server: its liveness probe is GET /, answered 200 while the process runs.
HTTP = """
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(STATUS); self.send_header('Content-Length', '0'); self.end_headers()
    def log_message(self, *a): pass
s = socketserver.TCPServer(('127.0.0.1', 0), H)
print(f'ready on http://127.0.0.1:{s.server_address[1]}', flush=True)
s.serve_forever()
"""


def test_a_child_that_recycles_itself_is_started_again_at_once_and_is_no_death() -> None:
    async def scenario() -> None:
        c = child(RECYCLES)
        c.recycle_code = 75  # what a Lambda host exits with after a timed-out invocation
        c.wait_ready()
        sup = Supervisor([c], FAST, lambda ch: None, lambda ch: None)
        task = asyncio.create_task(sup.run())
        started = time.monotonic()
        # More recycles than FAST's limit of deaths (2), and no backoff between them.
        await until(lambda: sup.restarts["child"] >= 4)
        assert not task.done() and time.monotonic() - started < 4
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        c.stop()

    asyncio.run(scenario())


def test_a_child_alive_but_not_answering_its_probe_is_killed_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = RestartPolicy(
        first_delay_s=0.1, limit=2, window_s=60, poll_s=0.05, probe_interval_s=0.3, probe_failures=3
    )

    async def scenario() -> None:
        c = ReadyProcess(
            [sys.executable, "-c", "STATUS = 200\n" + HTTP], "ready on ", "test server", name="server",
            probe_path="/",
        )
        c.wait_ready()
        first = c.pid
        assert first is not None
        sup = Supervisor([c], policy, lambda ch: None, lambda ch: None)
        task = asyncio.create_task(sup.run())
        await asyncio.sleep(1.5)  # answering: probed five times, left alone
        assert c.pid == first and sup.restarts == {"server": 0}
        os.kill(first, signal.SIGSTOP)  # alive, its socket open, answering nothing
        stopped = time.monotonic()
        await until(lambda: sup.restarts["server"] == 1, timeout_s=10)
        # Three probes of 0.3 s unanswered, then the kill and the restart's backoff and start.
        assert time.monotonic() - stopped < 3.5 and not pid_alive(first) and c.pid != first
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        c.stop()

    with caplog.at_level(logging.WARNING, logger="chatstack.up"):
        asyncio.run(scenario())
    assert any("answered none of 3 probes" in m for m in caplog.messages)


def test_a_child_answering_its_probe_with_an_error_status_is_alive_and_left_alone() -> None:
    """The model server's /ping answers 503 while its backend is not ready (an upstream down): the
    process answers, so it is alive; killing it would cut every answer it streams, every 30 s."""
    policy = RestartPolicy(poll_s=0.05, probe_interval_s=0.2, probe_failures=2)

    async def scenario() -> None:
        c = ReadyProcess(
            [sys.executable, "-c", "STATUS = 503\n" + HTTP], "ready on ", "test server", name="server",
            probe_path="/",
        )
        c.wait_ready()
        first = c.pid
        sup = Supervisor([c], policy, lambda ch: None, lambda ch: None)
        task = asyncio.create_task(sup.run())
        await asyncio.sleep(1.5)  # seven probes, each answered 503
        assert c.pid == first and sup.restarts == {"server": 0} and not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        c.stop()

    asyncio.run(scenario())


def test_a_child_that_recycles_itself_too_often_counts_as_dying() -> None:
    """A function that times out on every call must not keep killing its host's other invocations:
    past `recycle_limit` recycles in the window, each is a death, and `up` gives up in one sentence."""
    policy = RestartPolicy(first_delay_s=0.05, max_delay_s=0.1, limit=2, window_s=60, poll_s=0.05,
                           recycle_limit=2)

    async def scenario() -> None:
        c = child(RECYCLES)
        c.recycle_code = 75
        c.wait_ready()
        sup = Supervisor([c], policy, lambda ch: None, lambda ch: None)
        with pytest.raises(ChildKeepsDying, match="died 3 times"):
            await asyncio.wait_for(sup.run(), timeout=20)
        c.stop()

    asyncio.run(scenario())
