"""SIGTERM stops `chatstack up` even while a request's thread is still working: an upload being indexed
for a client that gave up kept the process at full CPU for minutes after it said "chatstack stopped."
(the interpreter waits for the worker thread at exit). A real `chatstack up` of its own."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.service import start_service

pytestmark = pytest.mark.e2e
STOP_S = 60
EXIT_S = 6


def test_sigterm_stops_up_while_a_document_is_being_indexed(tmp_path: Path) -> None:
    service = start_service(tmp_path / "data", "--token-rate", "0")
    try:
        token = service.token(user="writer", tenant="t-stop", scopes=("documents:write",))
        # 300 KB of text: a minute of indexing on a laptop's CPU, far more than the client waits.
        body = {"source": "big.md", "text": "x " * 150_000}
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{service.base}/v1/documents", json=body,
                       headers={"Authorization": f"Bearer {token}"}, timeout=3)
        service.proc.send_signal(signal.SIGTERM)
        # Its graceful shutdown gives requests 5 s, then stops the children and says so; then it must
        # exit within the 2 s it gives a request's thread to finish (it lingered 10-30 s here).
        log = tmp_path / "data.log"
        deadline = time.monotonic() + STOP_S
        while "chatstack stopped." not in log.read_text():
            assert time.monotonic() < deadline, f"no 'chatstack stopped.' {STOP_S} s after SIGTERM"
            time.sleep(0.1)
        try:
            service.proc.wait(EXIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"chatstack up was still running {EXIT_S} s after it said it had stopped")
        assert "Abandoned 1 request(s) still running at shutdown." in log.read_text()
    finally:
        if service.proc.poll() is None:
            service.proc.kill()
