"""`chatstack bench overhead --cores N` runs the whole benchmark (the service, the model, the client)
on N cores: the processes it starts inherit the restriction, and the gateway's route limit follows it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from chatstack.bench.overhead import overhead

HAS_AFFINITY = hasattr(os, "sched_setaffinity")
needs_affinity = pytest.mark.skipif(not HAS_AFFINITY, reason="CPU affinity is a Linux call")
ALLOWED = len(os.sched_getaffinity(0)) if HAS_AFFINITY else 1


@needs_affinity
def test_the_processes_started_after_pinning_run_on_the_cores_chosen() -> None:
    script = (
        "import subprocess, sys; from chatstack.bench.overhead import pin_to_cores; "
        "print(sorted(pin_to_cores(1))); "
        "subprocess.run([sys.executable, '-c', "
        "'import os; from chatstack.local.process import usable_cores; "
        "print(sorted(os.sched_getaffinity(0)), usable_cores())'])"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    chosen, child = out.stdout.strip().splitlines()
    assert chosen == str([min(os.sched_getaffinity(0))])
    assert child == f"{chosen} 1"


@needs_affinity
@pytest.mark.parametrize("cores", ["0", str(ALLOWED + 1)])
def test_more_cores_than_allowed_or_none_get_one_sentence(cores: str) -> None:
    before = os.sched_getaffinity(0)
    result = CliRunner().invoke(overhead, ["--cores", cores, "--concurrency", "1"])
    assert result.exit_code != 0
    assert f"--cores must be between 1 and {ALLOWED}" in result.output
    assert os.sched_getaffinity(0) == before  # refused before anything was pinned


def test_the_lambda_hosts_follow_the_cores_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from chatstack.bench import overhead as bench

    monkeypatch.setattr(bench, "usable_cores", lambda: 8)
    assert bench.lambda_hosts(None) == 8
    assert bench.lambda_hosts(3) == 3
    monkeypatch.setattr(bench, "usable_cores", lambda: 1)
    assert bench.lambda_hosts(None) == 2  # never fewer than two, as `chatstack up` starts by default
