"""The pool of lambdas/adapters/db.py against real PostgreSQL: a connection the server ended while it
sat idle in the pool is replaced before use (the caller never sees it), and `read()` runs each
statement on its own (no transaction) and gives the connection back as `transaction()` expects it."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from lambdas.adapters.db import Database


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url, max_size=1, min_size=1)  # one connection: every test reuses it
    yield database
    database.close()


def _backend(db: Database) -> int:
    with db.transaction() as conn:
        row = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
    assert row is not None
    return int(row["pid"])


def test_a_connection_the_server_ended_while_idle_is_replaced_before_use(db: Database, pg_url: str) -> None:
    first = _backend(db)
    with psycopg.connect(pg_url, autocommit=True) as admin:  # an administrator's terminate (or a restart)
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    time.sleep(0.2)  # the server's goodbye reaches the idle connection's socket
    second = _backend(db)  # no error: the pool's check saw the ended connection and replaced it
    assert second != first
    assert _backend(db) == second  # a healthy idle connection is handed out again


def test_reads_run_outside_a_transaction_and_the_connection_goes_back_as_it_was(db: Database) -> None:
    with db.read() as conn:
        assert conn.autocommit
        row = conn.execute("SELECT now() = statement_timestamp() AS own").fetchone()
        assert row is not None and row["own"]  # no transaction began (now() is its start)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with db.transaction() as conn:
        assert not conn.autocommit
        conn.execute("SELECT 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS

    with pytest.raises(psycopg.errors.UndefinedTable), db.read() as conn:
        conn.execute("SELECT * FROM no_such_table")
    with db.transaction() as conn:  # the failed read left nothing behind
        assert not conn.autocommit
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}


def test_a_read_whose_connection_the_server_ends_fails_with_the_servers_error(
    db: Database, pg_url: str
) -> None:
    with pytest.raises(psycopg.errors.AdminShutdown), db.read() as conn:  # not "the connection is lost"
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        time.sleep(0.2)
        conn.execute("SELECT 1")
    assert _backend(db) > 0  # the pool replaced the broken connection


def test_a_snapshot_sees_one_instant_is_read_only_and_goes_back_as_it_was(db: Database, pg_url: str) -> None:
    """A usage report's rows and totals are two statements: read committed let a row commit between
    them (totals 33 requests over rows that summed to 32, seen under load). In a snapshot both see one
    instant."""
    db.migrate()
    tenant = f"t-snap-{time.time_ns()}"
    count = "SELECT count(*) AS n FROM usage_records WHERE tenant_id = %s"

    def insert() -> None:
        with psycopg.connect(pg_url, autocommit=True) as other:
            other.execute(
                "INSERT INTO usage_records (request_id, tenant_id, user_id, model_profile, region,"
                " input_tokens, output_tokens, duration_ms, finish_reason) VALUES"
                " (gen_random_uuid(), %s, 'u', 'p', 'r', 1, 1, 1, 'stop')",
                (tenant,),
            )

    with db.snapshot() as conn:
        first = conn.execute(count, (tenant,)).fetchone()["n"]
        insert()  # committed by another session between the two statements
        assert conn.execute(count, (tenant,)).fetchone()["n"] == first == 0
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM usage_records WHERE tenant_id = %s", (tenant,))
    with db.transaction() as conn:  # the pooled connection is back to the default: it sees the row
        assert conn.execute(count, (tenant,)).fetchone()["n"] == 1
        level = conn.execute("SHOW transaction_isolation").fetchone()["transaction_isolation"]
        assert level == "read committed"


@pytest.mark.parametrize("way", ["transaction", "read", "snapshot"])
def test_a_server_that_stops_answering_fails_the_transaction_at_its_deadline_and_the_pool_heals(
    pg_url: str, way: str
) -> None:
    """A stalled server (its backend SIGSTOPped: the kernel still accepts what is sent, nothing comes
    back) is not a refused connection: without a deadline the caller waited until it woke (a
    sendMessage 34 s, an answer's `done` a minute). With one, the wait ends in OperationalError, which
    handlers answer as a dependency down (INTERNAL with retryAfter, a 503), and the pool replaces the
    cut connection once the server answers again."""
    from lambdas.adapters.failures import dependency_down

    db = Database(pg_url, max_size=1, min_size=1, deadline_s=1.0)
    try:
        stalled = _backend(db)
        os.kill(stalled, signal.SIGSTOP)
        wake = threading.Timer(10, os.kill, (stalled, signal.SIGCONT))  # without a deadline: fail, not hang
        wake.start()
        try:
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError) as failed, getattr(db, way)() as conn:
                conn.execute("SELECT 1")
            waited = time.monotonic() - started
        finally:
            wake.cancel()
            os.kill(stalled, signal.SIGCONT)
        assert dependency_down(failed.value)
        assert waited < 6, waited  # the deadline (1 s), not the stall (which lasts until SIGCONT)
        assert _backend(db) != stalled  # the next transaction runs on a new connection
    finally:
        db.close()


def test_a_transaction_within_its_deadline_commits_and_one_past_it_is_rolled_back(pg_url: str) -> None:
    """The deadline covers the whole transaction, COMMIT included: work past it is not committed."""
    db = Database(pg_url, max_size=1, min_size=1, deadline_s=1.0)
    table = f"deadline_{os.getpid()}"
    try:
        with db.transaction(deadline_s=30) as conn:  # the set-up is not what is tested
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (n int)")
            conn.execute(f"TRUNCATE {table}")
        with db.transaction(deadline_s=30) as conn:
            conn.execute(f"INSERT INTO {table} VALUES (1)")
        with pytest.raises(psycopg.OperationalError), db.transaction() as conn:
            conn.execute(f"INSERT INTO {table} VALUES (2)")
            conn.execute("SELECT pg_sleep(3)")  # the server itself is slow
        with db.transaction(deadline_s=30) as conn:  # a longer one asked for its own
            conn.execute("SELECT pg_sleep(1.3)")
            rows = conn.execute(f"SELECT n FROM {table} ORDER BY n").fetchall()
            conn.execute(f"DROP TABLE {table}")
        assert rows == [{"n": 1}]
    finally:
        db.close()


def test_one_watch_thread_serves_every_database_and_ends_when_idle(pg_url: str) -> None:
    """A review counted a thread per Database, never stopped (the suite builds dozens)."""
    from lambdas.adapters import db as db_module

    first, second = Database(pg_url, max_size=1), Database(pg_url, max_size=1)
    try:
        assert first.deadlines is second.deadlines is db_module.DEADLINES
        with first.read() as conn:
            conn.execute("SELECT 1")
        watching = [t for t in threading.enumerate() if t.name == "db-deadlines"]
        assert len(watching) == 1
    finally:
        first.close()
        second.close()
    watching[0].join(db_module._IDLE_S + 2)
    assert not watching[0].is_alive()  # nothing to watch: the thread ended
