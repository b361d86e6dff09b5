"""Child processes of the local runtime (the model server, the Lambda hosts) that print one line
when they are ready; the line carries their URL."""

from __future__ import annotations

import os
import subprocess
import time


class ReadyProcess:
    """Starts `cmd` and reads its stdout until a line starting with `marker`; the rest is its URL."""

    def __init__(self, cmd: list[str], marker: str, what: str, env: dict[str, str] | None = None) -> None:
        self.marker = marker
        self.what = what
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=None, text=True, env={**os.environ, **(env or {})}
        )
        self.url = ""

    def wait_ready(self, timeout_s: float = 120.0) -> str:
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(
                    f"The {self.what} exited before it was ready (exit code {self.proc.poll()})."
                )
            if self.marker in line:
                self.url = line.rsplit(self.marker, 1)[1].strip()
                return self.url
        raise SystemExit(f"The {self.what} did not become ready in time.")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
