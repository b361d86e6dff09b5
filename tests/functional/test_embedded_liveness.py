"""Liveness of the embedded PostgreSQL of `chatstack up`, with a real server: its probe answers while the
server is busy or refuses in words, fails within its timeout once the server is stopped, and a stopped
server is killed with every backend and started again by the supervisor at the same URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from chatstack.local.embedded import PostgresChild
from chatstack.local.process import pid_alive
from chatstack.local.supervisor import RestartPolicy, Supervisor


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[PostgresChild]:
    child = PostgresChild(tmp_path / "pg")
    child.spawn()
    child.wait_ready()
    yield child
    signal_all(family(child), signal.SIGCONT)  # a failed test may leave it stopped
    child.close()


def family(child: PostgresChild) -> list[int]:
    """The postmaster and every process it started."""
    assert child.pid is not None
    try:
        return [child.pid, *(p.pid for p in psutil.Process(child.pid).children(recursive=True))]
    except psutil.Error:
        return []


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # a backend that was ending
            os.kill(pid, sig)


def test_the_probe_answers_while_sessions_hold_locks_and_run_and_fails_in_time_once_stopped(
    pg: PostgresChild,
) -> None:
    sessions = [psycopg.connect(pg.url, autocommit=True) for _ in range(3)]
    holds, waits, runs = sessions
    try:
        holds.execute("create table t (n int)")
        holds.execute("begin")
        holds.execute("lock table t in access exclusive mode")
        # a session blocked on that lock, and one busy in a long statement, as under load
        waits.pgconn.send_query(b"select count(*) from t")
        runs.pgconn.send_query(b"select pg_sleep(30)")
        started = time.monotonic()
        assert pg.probe(2.0) is True
        assert time.monotonic() - started < 1.0
    finally:
        for conn in sessions:
            conn.close()
    # GIVEN the postmaster and its backends stopped: the probe says no within its timeout
    stopped = family(pg)
    signal_all(stopped, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert pg.probe(0.5) is False
        assert 0.4 < time.monotonic() - started < 1.5
    finally:
        signal_all(stopped, signal.SIGCONT)
    assert pg.probe(2.0) is True


def test_a_server_that_refuses_a_connection_in_words_answers_its_probe(pg: PostgresChild) -> None:
    # GIVEN every connection slot taken, the reserved ones included: a new one is refused
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("alter system set max_connections = 5")
        conn.execute("alter system set superuser_reserved_connections = 0")
        conn.execute("alter system set reserved_connections = 0")
    pg.stop()
    pg.spawn()
    pg.wait_ready()
    held = [psycopg.connect(pg.url) for _ in range(5)]
    try:
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            psycopg.connect(pg.url, connect_timeout=5)
        # THEN the probe counts the refusal as an answer: a full server is a busy one, not a hung one
        assert pg.probe(2.0) is True
    finally:
        for conn in held:
            conn.close()


def test_a_stopped_postgresql_is_killed_with_every_backend_and_restarted_at_the_same_url(
    pg: PostgresChild, caplog: pytest.LogCaptureFixture
) -> None:
    policy = RestartPolicy(
        first_delay_s=0.1, limit=2, window_s=60, poll_s=0.05, probe_interval_s=0.3, probe_failures=3
    )
    url = pg.url
    session = psycopg.connect(url, autocommit=True)  # a backend, stopped with the postmaster below
    backend = session.info.backend_pid
    restarted: list[int | None] = []
    stopped: list[int] = []

    async def scenario() -> None:
        sup = Supervisor([pg], policy, lambda c: None, lambda c: restarted.append(c.pid))
        task = asyncio.create_task(sup.run())
        await asyncio.sleep(1.5)  # answering: probed a few times, left alone
        assert not restarted and not task.done()
        stopped.extend(family(pg))
        assert backend in stopped and len(stopped) > 3  # the auxiliary processes too
        # GIVEN the postmaster and all its backends alive but answering nothing, never continued
        signal_all(stopped, signal.SIGSTOP)
        at = time.monotonic()
        deadline = at + 20
        while not restarted:
            assert time.monotonic() < deadline and not task.done(), "not restarted"
            await asyncio.sleep(0.05)
        # THEN three probes of 0.3 s went unanswered, then every stopped process was killed (SIGKILL
        # takes a stopped process) and the server came back
        assert time.monotonic() - at < 10
        assert not any(pid_alive(pid) for pid in stopped)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    try:
        with caplog.at_level(logging.WARNING, logger="chatstack.up"):
            asyncio.run(scenario())
        assert any("PostgreSQL" in m and "answered none of 3 probes" in m for m in caplog.messages)
        assert not any("did not restart" in m for m in caplog.messages)
        assert pg.url == url
        with psycopg.connect(url, connect_timeout=5) as fresh:
            assert fresh.execute("select 1").fetchone() == (1,)
    finally:
        signal_all([pid for pid in stopped if pid_alive(pid)], signal.SIGKILL)  # the test failed
        session.close()
