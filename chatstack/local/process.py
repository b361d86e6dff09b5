"""Child processes of the local runtime (model server, Lambda hosts, embedded PostgreSQL and Redis).

Every child is started so that it cannot outlive `chatstack up`: the kernel sends it a signal when
its parent dies (PR_SET_PDEATHSIG, Linux), even if `up` is killed with SIGKILL. It also runs in its
own process group, so Ctrl+C in the terminal reaches `up` alone, which then stops the children in
order instead of watching them die first. PR_SET_PDEATHSIG fires when the *thread* that forked the
child ends, so children are spawned from the event loop's thread (which lives as long as `up`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import http.client
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

PR_SET_PDEATHSIG = 1
T = TypeVar("T")


def die_with_parent(sig: int) -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the forked child only makes the call

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, sig)

    return preexec


class Child(ABC):
    """One supervised child: `spawn` (event-loop thread), `wait_ready` (any thread), `poll`, `stop`."""

    name: str  # its key in runtime.json: "model", "lambda-0", "postgres", "redis"
    what: str  # how log lines name it: "model server", "Lambda host 0", ...
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    # The signal the kernel sends when `up` dies, and the one `stop` sends first.
    parent_death_signal: int = signal.SIGKILL
    stop_signal: int = signal.SIGTERM
    # The exit code of a child that ended itself on purpose to be started anew (a Lambda host after a
    # timed-out invocation): restarted at once and not counted as a death.
    recycle_code: int | None = None

    def _popen(self, cmd: list[str], *, stdout: int | IO[Any] | None, **kwargs: Any) -> None:
        self.proc = subprocess.Popen(
            cmd,
            stdout=stdout,
            stderr=kwargs.pop("stderr", None),
            text=True,
            process_group=0,
            preexec_fn=die_with_parent(self.parent_death_signal),
            **kwargs,
        )

    def prepare(self) -> None:
        """Blocking work before a restart's `spawn` (run in a worker thread): e.g. wait for what the
        dead process left to let go."""
        return None

    @abstractmethod
    def spawn(self) -> None: ...

    @abstractmethod
    def wait_ready(self, timeout_s: float = 120.0) -> str:
        """Blocks until the child serves; returns its URL. Raises SystemExit with one sentence."""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def poll(self) -> int | None:
        """None while it runs, else its exit code (negative: killed by that signal)."""
        return None if self.proc is None else self.proc.poll()

    def probe(self, timeout_s: float) -> bool | None:
        """Liveness: True if it answered within `timeout_s` (from any thread); None: not probed."""
        return None

    def kill_hung(self) -> None:
        """SIGKILL it and its process group (alive but not answering: a stopped process takes no
        SIGTERM); the supervisor then sees it exit and restarts it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own group (process_group=0 in _popen)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(self.stop_signal)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ReadyProcess(Child):
    """Runs `cmd` and reads its stdout until a line containing `marker`; the rest is its URL.

    Its stdout is read for as long as it runs and passed on to our stderr: the Lambda hosts' handlers
    log there (Powertools, as in Lambda), and a pipe nobody reads fills up (64 KiB) and then blocks
    the child's next log call, and with it an invocation.
    """

    def __init__(
        self,
        cmd: list[str],
        marker: str,
        what: str,
        env: dict[str, str] | None = None,
        name: str = "",
        spawn: bool = True,
        probe_path: str = "",
    ) -> None:
        self.cmd = cmd
        self.marker = marker
        self.what = what
        self.name = name or what
        self.env = env
        self.probe_path = probe_path  # GET it for liveness (any answer counts); empty: not probed
        if spawn:
            self.spawn()

    def spawn(self) -> None:
        # The environment is read at each start, so a restarted child gets the same settings.
        self._popen(self.cmd, stdout=subprocess.PIPE, env={**os.environ, **(self.env or {})})
        self._ready_line: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc, self._ready_line), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[str], ready_line: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        seen = False
        for line in proc.stdout:
            if not seen and self.marker in line:
                seen = True
                ready_line.put(line)
                continue
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(line)
                sys.stderr.flush()
        ready_line.put(None)  # it exited (or closed its stdout)

    def wait_ready(self, timeout_s: float = 120.0) -> str:
        assert self.proc is not None
        try:
            line = self._ready_line.get(timeout=timeout_s)
        except queue.Empty:
            raise SystemExit(f"The {self.what} did not become ready in {timeout_s:g} s.") from None
        if line is None:
            raise SystemExit(f"The {self.what} exited before it was ready (exit code {self.proc.wait()}).")
        self.url = line.rsplit(self.marker, 1)[1].strip()
        return self.url

    def probe(self, timeout_s: float) -> bool | None:
        if not self.probe_path or not self.url:
            return None
        from chatstack.local.internal_auth import ENV_SECRET, secret_headers

        return http_alive(self.url, self.probe_path, timeout_s, secret_headers(os.environ.get(ENV_SECRET)))


def http_alive(url: str, path: str, timeout_s: float, headers: dict[str, str] | None = None) -> bool:
    """GET `path` of the server at `url` is answered within `timeout_s` (connecting included). Any
    status counts: the model server's /ping answers 503 while its backend is not ready, and a process
    that answers is alive (its readiness is the breaker's and the health checks' business)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    try:
        connection.request("GET", path, headers=headers or {})
        connection.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def stop_all(children: list[Child], timeout_s: float = 10.0) -> None:
    """Stops children at once rather than one after another (each may take its grace period)."""
    for child in children:
        if child.proc is not None and child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(child.stop_signal)
    deadline = time.monotonic() + timeout_s
    for child in children:
        child.stop(timeout_s=max(0.1, deadline - time.monotonic()))


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the platform has one (a container's
    or `taskset`'s limit), else every core."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def pid_alive(pid: int) -> bool:
    """True if `pid` runs (a zombie does not count: it has exited and waits to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def leftover_pid(pid_file: Path, *needles: str) -> int | None:
    """The pid in `pid_file` (first line) if it still runs a process whose command line contains
    every needle, i.e. a server we (or a crashed `up`) started; None when the file is stale."""
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return None
    if pid <= 0 or pid == os.getpid() or not pid_alive(pid):
        return None
    args = " ".join(cmdline(pid))
    return pid if all(needle in args for needle in needles) else None


def end_process(pid: int, sig: int, timeout_s: float = 15.0) -> None:
    """Sends `sig`, waits for `pid` to go, then SIGKILL (for leftovers that are not our children)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while pid_alive(pid) and time.monotonic() < deadline + 5:
        time.sleep(0.1)


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on uvloop when it is installed, as uvicorn's own `loop="auto"` would pick
    (the servers here call `Server.serve` themselves, so uvicorn's choice never ran). The gateway and
    the Lambda hosts spend their time in the event loop's socket handling; uvloop does that in C."""
    try:
        import uvloop
    except ImportError:  # Windows, or an install without uvicorn[standard]
        return asyncio.run(main)
    return uvloop.run(main)
