"""The service under test, known by its data directory: its runtime.json, its children's pids, and how to
signal, stop and restart them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
from websockets.exceptions import WebSocketException

from chatstack.local.identity import DevIdentity

TENANT = "chaos"
NETWORK_ERRORS = (OSError, TimeoutError, WebSocketException, httpx.HTTPError)


class ServiceDir:
    """A `chatstack up` known by its data directory (runtime.json), with the pids of its children."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.identity = DevIdentity(data_dir / "identity")
        pid = self.pid()
        if pid is None:
            raise RuntimeError(f"No `chatstack up` is running on {data_dir}.")
        # How to start it again after `whole-service`: its own command line, directory and environment.
        up = psutil.Process(pid)
        self.cmdline: list[str] = up.cmdline()
        self.cwd: str = up.cwd()
        try:
            self.env: dict[str, str] = up.environ()
        except psutil.AccessDenied:
            self.env = dict(os.environ)
        self.restarts = 0

    def info(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.data_dir / "runtime.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    @property
    def websocket(self) -> str:
        return str(self.info().get("websocket", ""))

    @property
    def base(self) -> str:
        return str(self.info().get("base", ""))

    def token(self, user: str) -> str:
        return self.identity.mint(user=user, tenant=TENANT, scopes=("chat",), ttl_s=3600)

    def children(self) -> dict[str, int]:
        """Child name -> pid: runtime.json's `children` where they are alive, else found by looking."""
        info = self.info()
        found: dict[str, int] = {}
        with contextlib.suppress(psutil.Error, KeyError):
            hosts = 0
            for child in psutil.Process(info["pid"]).children():
                command = " ".join(child.cmdline())
                if "sagemaker_containers.server" in command:
                    found["model"] = child.pid
                elif "chatstack.local.lambda_host" in command:
                    found[f"lambda-{hosts}"] = child.pid
                    hosts += 1
        # The embedded servers daemonize (their parent is init): their pid files say who they are.
        with contextlib.suppress(OSError, ValueError):
            pid_line = (self.data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0]
            found["postgres"] = int(pid_line)
        with contextlib.suppress(OSError, ValueError, KeyError):
            settings = json.loads((self.data_dir / "redis" / "redis.db.settings").read_text())
            found["redis"] = int(Path(settings["pidfile"]).read_text().strip())
        for name, pid in (info.get("children") or {}).items():
            if _alive(pid):
                found[name] = int(pid)
        # A pid file outlives its process and pids are reused: signal only what still is that child.
        return {name: pid for name, pid in found.items() if _alive(pid, _marker(name))}

    def worker_hosts(self) -> list[str]:
        """The Lambda hosts streaming from the model server right now (they run the worker)."""
        port = urlsplit(str(self.info().get("model", ""))).port
        busy = []
        for name, pid in self.children().items():
            if not name.startswith("lambda-"):
                continue
            with contextlib.suppress(psutil.Error):
                if any(
                    c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
                    for c in psutil.Process(pid).net_connections("tcp")
                ):
                    busy.append(name)
        return busy

    def kill(self, name: str, sig: int = signal.SIGKILL) -> str:
        """Signal one child (PostgreSQL: the postmaster and its backends); answers what was hit."""
        return self._signal(name, self.children()[name], sig)

    def _signal(self, name: str, pid: int, sig: int) -> str:
        victims = [pid]
        if name == "postgres":
            with contextlib.suppress(psutil.Error):
                victims += [p.pid for p in psutil.Process(pid).children()]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, sig)
        if sig == signal.SIGKILL:  # make sure it is gone before the clock starts
            deadline = time.monotonic() + 3
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                return f"{name} (pid {pid}, still running 3 s after SIGKILL)"
        return f"{name} (pid {pid})"

    def kill_everything(self) -> list[str]:
        """SIGKILL `up` first (so nothing restarts what follows), then every child it had."""
        hit = []
        children = self.children()
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            hit.append(f"up (pid {pid})")
        for name, child in children.items():
            hit.append(self._signal(name, child, signal.SIGKILL))
        return hit

    def launch(self) -> subprocess.Popen[bytes]:
        """Start `chatstack up` again with its first command line, on the same data directory."""
        self.restarts += 1
        log = open(self.data_dir.parent / f"{self.data_dir.name}-restart-{self.restarts}.log", "wb")  # noqa: SIM115
        return subprocess.Popen(
            self.cmdline,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def pid(self) -> int | None:
        """The pid of the running `up`, or None."""
        pid = self.info().get("pid")
        return pid if isinstance(pid, int) and _alive(pid, "chatstack") else None

    def healthy(self) -> bool:
        if self.pid() is None:
            return False
        try:
            return httpx.get(self.base + "/healthz", timeout=5).status_code == 200
        except NETWORK_ERRORS:
            return False

    async def restart(self, timeout_s: float = 120) -> None:
        """Kill whatever is left and start afresh on the same data directory; wait until it is healthy."""
        self.kill_everything()
        proc = self.launch()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"`chatstack up` exited with {proc.returncode} when restarted on {self.data_dir}."
                )
            if self.info().get("pid") == proc.pid and await asyncio.to_thread(self.healthy):
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(
            f"`chatstack up` on {self.data_dir} was not healthy {timeout_s:.0f} s after a restart."
        )

    def stop(self) -> None:
        """SIGTERM the running `up`, then SIGKILL whatever of its children outlived it."""
        pid = self.pid()
        children = self.children()
        if pid is not None:
            up = psutil.Process(pid)
            up.terminate()
            try:
                up.wait(30)
            except psutil.TimeoutExpired:
                up.kill()
        for child in children.values():
            with contextlib.suppress(psutil.Error):
                psutil.Process(child).kill()


def _alive(pid: Any, marker: str = "") -> bool:
    """`pid` runs (not a zombie), and its command line contains `marker`."""
    if not isinstance(pid, int):
        return False
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and marker in " ".join(process.cmdline())
    except psutil.Error:
        return False


def _marker(child: str) -> str:
    """What the command line of a child of `chatstack up` contains."""
    if child.startswith("lambda-"):
        return "chatstack.local.lambda_host"
    return {"model": "sagemaker_containers.server", "postgres": "postgres", "redis": "redis-server"}.get(
        child, ""
    )
