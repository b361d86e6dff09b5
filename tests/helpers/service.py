"""Start and stop a real `chatstack up` in a subprocess on a free port, with its own data directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from chatstack.local.identity import DevIdentity


@dataclass
class Service:
    base: str
    websocket: str
    page: str
    data_dir: Path
    proc: subprocess.Popen[str]

    def stdout(self) -> str:
        """What `chatstack up` printed on stdout so far (its banner first)."""
        return (self.data_dir.parent / f"{self.data_dir.name}.out").read_text()

    def token(
        self,
        user: str = "alice",
        tenant: str = "acme",
        scopes: tuple[str, ...] = ("chat",),
        ttl_s: int = 3600,
    ) -> str:
        return DevIdentity(self.data_dir / "identity").mint(
            user=user, tenant=tenant, scopes=scopes, ttl_s=ttl_s
        )


def start_service(data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> Service:
    log = open(data_dir.parent / f"{data_dir.name}.log", "w")  # noqa: SIM115  (closed with the process)
    # stdout to a file, never an unread pipe: a service that writes more than a pipe holds would block
    # on it (the `lambda-host` fault once hung every chat that way). `Service.stdout()` reads it.
    out = open(data_dir.parent / f"{data_dir.name}.out", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatstack.cli", "up", "--port", "0", "--data-dir", str(data_dir), *extra],
        stdout=out,
        stderr=log,
        text=True,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 180
    state = data_dir / "runtime.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chatstack up exited with {proc.returncode}; see {log.name}")
        if state.exists():
            info = json.loads(state.read_text())
            if info.get("pid") == proc.pid:
                r = httpx.get(info["base"] + "/healthz", timeout=10)
                assert r.status_code == 200, r.text
                return Service(info["base"], info["websocket"], info["page"], data_dir, proc)
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("chatstack up did not become ready in 180 s")


def stop_service(service: Service) -> None:
    service.proc.send_signal(signal.SIGTERM)
    try:
        service.proc.wait(30)
    except subprocess.TimeoutExpired:
        service.proc.kill()
