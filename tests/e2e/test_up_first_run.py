"""The first `chatstack up --ingest PATH` (what `make up` runs on a new data dir) indexes PATH for the
development tenant once the service is up, so the first question has something to answer from;
Ctrl+C (SIGINT to the whole process group, as a terminal sends it) stops everything without a
traceback. A real `chatstack up` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chatstack.local.identity import DevIdentity

pytestmark = pytest.mark.e2e


def test_up_ingests_on_start_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bees.md").write_text("# Bees\n\nA hive keeps its brood at 35 degrees Celsius.\n")
    data_dir = tmp_path / "data"
    err_path = tmp_path / "up.err"
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatstack.cli", "up", "--port", "0", "--data-dir", str(data_dir),
             "--ingest", str(docs)],
            stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            base = ""
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not base:
                line = proc.stdout.readline()
                assert line, f"up exited: {err_path.read_text()[-2000:]}"
                if "healthz:" in line:
                    base = line.split("healthz:")[1].strip().removesuffix("/healthz")
            token = DevIdentity(data_dir / "identity").mint(user="dev", tenant="local")
            titles: list[str] = []
            while time.monotonic() < deadline and not titles:
                reply = httpx.get(base + "/v1/documents", headers={"Authorization": f"Bearer {token}"},
                                  timeout=10)
                assert reply.status_code == 200, reply.text
                titles = [d["title"] for d in reply.json()["items"]]
                time.sleep(1)
            assert titles == ["Bees"]
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(60)
    stderr = err_path.read_text()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert code in (0, 130)
    rest = proc.stdout.read() if proc.stdout else ""
    assert "Ingested 1 file(s)" in stderr + rest
