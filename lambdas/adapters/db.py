"""PostgreSQL access: one connection pool per process and the versioned migrations.

Migrations are the SQL files in `migrations/` named `NNNN_description.sql`, applied in order, each
in its own transaction, recorded in `schema_migrations`, under an advisory lock so that concurrent
starters (many Lambda containers, several test processes) apply each exactly once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from psycopg_pool.base import AttemptWithBackoff

from lambdas.adapters import sockets

MIGRATION_LOCK_ID = 0x63686174  # "chat"
CONNECT_TIMEOUT_S = 2
POOL_TIMEOUT_S = 2.0
RECONNECT_TIMEOUT_S = 60.0
# How long one transaction (or read) may take, its COMMIT included, before its connection is cut. A
# server that refuses connections fails in CONNECT_TIMEOUT_S; one that accepts them and stops answering
# (stalled, paused, partitioned: the kernel still acknowledges what is sent) would hold a request until
# it woke, whatever the client was promised. The chat path's transactions take milliseconds.
DEADLINE_S = 5.0
_TICK_S = 0.1  # how often the deadlines are looked at
_IDLE_S = 5.0  # how long the watch thread outlives the last guarded transaction
# psycopg_pool retries a failed connection after 1 s, doubling each time (1, 2, 4, 8, 16 s...): after a
# 20 s outage the pool would sit idle up to 16 s more. A steady 1 s pace (bounded by reconnect_timeout)
# brings it back within a second of the server's return.
AttemptWithBackoff.DELAY_BACKOFF = 1.0
# The standard logger, as the other adapters: Powertools' (lambdas.observability) would take over the
# `chatstack` logger tree of any process that imports this module, `chatstack up`'s own lines included.
log = logging.getLogger(__name__)
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def _check(conn: psycopg.Connection[Any]) -> None:
    """The pool's check of a connection before it hands it out, without a round trip in the usual
    case. A connection idle in the pool has nothing to read unless the server closed it or said why it
    is going away (a restart, a crash, an administrator's terminate): only then is it asked (the query
    fails, and the pool replaces the connection). psycopg's own check asked every time: a round trip
    for each transaction, four of them per chat."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("The connection is closed.")
    if sockets.readable(conn.fileno()):
        ConnectionPool.check_connection(conn)


def _sever(conn: psycopg.Connection[Any]) -> None:
    """Cut a connection from under the thread waiting on it: shut its socket down (a duplicate of the
    descriptor, so psycopg's own stays valid), so that the wait ends at once with OperationalError
    ("server closed the connection unexpectedly") and the pool replaces the connection."""
    with contextlib.suppress(OSError, psycopg.Error), socket.socket(fileno=os.dup(conn.fileno())) as sock:
        sock.shutdown(socket.SHUT_RDWR)


class Deadlines:
    """One thread per process (`DEADLINES`, shared by every Database) that cuts the connections of
    transactions past their deadline (see DEADLINE_S). Guarding a transaction costs a dict insertion
    and removal under a lock; the thread starts with a guard, ticks every _TICK_S, and ends after
    _IDLE_S with nothing to watch (an idle process, a test's closed database, keeps no thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[int, tuple[float, float, psycopg.Connection[Any]]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
        key = next(self._ids)
        with self._lock:
            self._due[key] = (time.monotonic() + seconds, seconds, conn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="db-deadlines", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:  # once out, the watch cannot touch the connection the pool gets back
                self._due.pop(key, None)

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            time.sleep(_TICK_S)
            now = time.monotonic()
            with self._lock:
                if self._due:
                    idle_since = now
                elif now - idle_since > _IDLE_S:
                    self._thread = None  # the next guard starts another
                    return
                late = [key for key, (due, _, _) in self._due.items() if due <= now]
                for key in late:
                    _, seconds, conn = self._due.pop(key)
                    # Most often PostgreSQL not answering; it can also be other work inside the
                    # transaction (a queue send, an index write) that ran past it.
                    log.warning("a transaction passed its deadline (%g s); its connection is cut", seconds)
                    _sever(conn)


DEADLINES = Deadlines()


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file, in order."""
    found = []
    for entry in resources.files("lambdas.adapters.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"Two migrations share a version number: {[n for _, n, _ in found]}.")
    return found


class Database:
    """A pool of psycopg connections returning rows as dicts."""

    def __init__(
        self,
        url: str,
        *,
        max_size: int = 16,
        min_size: int = 1,
        password: Callable[[], str] | None = None,
        deadline_s: float = DEADLINE_S,
    ) -> None:
        """`password`, when given, is asked at every new connection (an RDS IAM auth token lives 15
        minutes, so a pool cannot keep one password). `deadline_s`: how long a transaction may take
        (DEADLINE_S); a longer one (a report, a bulk write) asks for its own."""
        if not url:
            raise ValueError("No database URL: set CHATSTACK_DATABASE_URL or DATABASE_URL.")
        self.url = url
        self.password = password
        self.deadline_s = deadline_s
        self.deadlines = DEADLINES
        base: dict[str, Any] = {
            "row_factory": dict_row,
            "autocommit": False,
            "connect_timeout": CONNECT_TIMEOUT_S,
        }
        # Fail fast and heal fast: a request waits at most POOL_TIMEOUT_S for a connection (then the
        # client gets an error with retryAfter), each connection is checked before use (a restarted
        # server leaves broken ones behind: `_check`), and reconnection retries at a steady pace.
        self.pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs=base if password is None else (lambda: {**base, "password": password()}),
            open=True,
            name="chatstack",
            connection_class=psycopg.Connection[dict[str, Any]],
            timeout=POOL_TIMEOUT_S,
            check=_check,
            reconnect_timeout=RECONNECT_TIMEOUT_S,
        )

    def _seconds(self, asked: float | None) -> float:
        """A transaction's deadline: what it asks for (a report, a bulk write), never less than the
        database's own (an operator's longer CHATSTACK_DATABASE_DEADLINE_S holds for those too)."""
        return max(asked or 0.0, self.deadline_s)

    @contextmanager
    def transaction(self, deadline_s: float | None = None) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A connection in a transaction: committed on success, rolled back on any error; the whole of
        it, COMMIT included, within `deadline_s` (default: the database's), or its connection is cut
        and it fails with OperationalError (lambdas.adapters.failures: a dependency down)."""
        with self.pool.connection() as conn, self.deadlines.guard(conn, self._seconds(deadline_s)):
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
                raise
            conn.commit()  # here, under the deadline; the pool's own commit then has nothing to do

    @contextmanager
    def snapshot(self, deadline_s: float | None = None) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A read-only transaction whose statements all see one snapshot (REPEATABLE READ), for reads
        that must agree with each other: a report's rows and its totals. The level goes with BEGIN,
        not a SET, which would pin the connection to its client behind RDS Proxy."""
        with self.pool.connection() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            try:
                with self.deadlines.guard(conn, self._seconds(deadline_s)):
                    try:
                        yield conn
                    finally:
                        if not (conn.closed or conn.broken):
                            conn.rollback()  # nothing to commit
            finally:
                if not (conn.closed or conn.broken):  # the attributes change only outside a transaction
                    conn.isolation_level = None
                    conn.read_only = None

    @contextmanager
    def read(self, deadline_s: float | None = None) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A connection for reads that need no transaction (each statement sees what was committed
        when it ran): one round trip per query, where a transaction adds BEGIN and COMMIT. The
        worker's reads of each chat go here."""
        with self.pool.connection() as conn:
            conn.autocommit = True
            try:
                with self.deadlines.guard(conn, self._seconds(deadline_s)):
                    yield conn
            finally:
                if not (conn.closed or conn.broken):  # a broken one is discarded by the pool
                    conn.autocommit = False

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied now."""
        applied_now: list[str] = []
        extra: dict[str, Any] = {"password": self.password()} if self.password is not None else {}
        with psycopg.connect(self.url, autocommit=True, **extra) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version int PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
                for version, name, sql in migrations():
                    if version in done:
                        continue
                    with conn.transaction():
                        conn.execute(sql.encode())  # a whole file, no parameters
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
                        )
                    applied_now.append(name)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
        return applied_now

    def ping(self) -> bool:
        with self.read() as conn:
            return conn.execute("SELECT 1 AS ok").fetchone() is not None

    def close(self) -> None:
        self.pool.close()
