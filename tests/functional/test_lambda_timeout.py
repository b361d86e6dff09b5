"""The Lambda host enforces a function's timeout as Lambda does (Lambda API reference, "Invoke"; the
Lambda developer guide, "Troubleshoot invocation issues", Sandbox.Timedout): at the timeout the
caller gets 200 with `X-Amz-Function-Error: Unhandled` and `{"errorType": "Sandbox.Timedout",
"errorMessage": "RequestId: ... Error: Task timed out after N.00 seconds"}` at once, and the execution
environment is torn down: nothing of that invocation runs afterwards.

A real host process (tests/helpers/hanging_host.py: the host's own app and server, with a handler that
sleeps and then writes a file), invoked by the runtime's own caller (RemoteFunction over a HostPool)."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatstack.local.lambda_host import (
    READY,
    RECYCLE_EXIT_CODE,
    FunctionError,
    HostPool,
    Recycled,
    RemoteFunction,
)
from chatstack.local.process import ReadyProcess
from lambdas import wiring

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReadyProcess]:
    monkeypatch.delenv("CHATSTACK_INTERNAL_SECRET", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.chdir(ROOT)
    child = ReadyProcess([sys.executable, "-m", "tests.helpers.hanging_host"], READY, "test Lambda host")
    child.wait_ready(60)
    yield child
    if child.poll() is None:
        child.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        child.proc.wait()  # type: ignore[union-attr]


def function(name: str, timeout_s: int) -> wiring.Function:
    return wiring.Function(name, f"tests.helpers.hanging_host:{name}", 128, timeout_s)


def test_a_handler_past_its_timeout_gets_lambdas_timeout_error_and_never_acts_again(
    host: ReadyProcess, tmp_path: Path
) -> None:
    written = tmp_path / "written-after-waking"
    hang = RemoteFunction(HostPool([host.url]), function("hang", 1))
    started = time.monotonic()
    # GIVEN a handler that sleeps 3 s and then writes, in a function whose timeout is 1 s
    with pytest.raises(FunctionError) as timed_out:
        hang({"sleepS": 3, "write": str(written)})
    # THEN the caller gets Lambda's timeout error at the timeout, not when the handler wakes
    answered_after = time.monotonic() - started
    assert timed_out.value.error_type == "Sandbox.Timedout"
    assert re.fullmatch(
        r"RequestId: [0-9a-f-]{36} Error: Task timed out after 1\.00 seconds", str(timed_out.value)
    )
    assert 1.0 <= answered_after < 2.0
    # AND the environment is torn down: the host exits, as one to be started anew
    assert host.proc is not None and host.proc.wait(5) == RECYCLE_EXIT_CODE
    # AND the handler never acts once it wakes
    time.sleep(max(0.0, started + 4 - time.monotonic()))
    assert not written.exists()


def test_an_invocation_within_its_timeout_is_answered_and_the_host_stays(host: ReadyProcess) -> None:
    echo = RemoteFunction(HostPool([host.url]), function("echo", 2))
    first = echo({"n": 1})
    # The context's deadline is the function's timeout as the caller gave it (2 s, not the wiring's 30).
    assert first["echo"] == {"n": 1} and 1000 < first["remainingMs"] <= 2000
    time.sleep(2.5)  # past the timeout of the invocation that ended: its timer is gone
    assert echo({"n": 2})["echo"] == {"n": 2} and host.poll() is None


def test_the_other_invocations_of_a_host_that_times_out_are_answered_as_recycled(
    host: ReadyProcess, tmp_path: Path
) -> None:
    """A local host runs many invocations where a Lambda environment runs one: when one times out and
    the host goes, the others were not at fault. They are answered as recycled (a NotInvoked, so the
    SQS stand-in retries them without counting the receive), not as failures of their own."""
    from concurrent.futures import ThreadPoolExecutor

    pool = HostPool([host.url])
    slow = RemoteFunction(pool, function("hang", 20))
    quick = RemoteFunction(pool, function("hang", 1))
    with ThreadPoolExecutor(2) as threads:
        # GIVEN an invocation running within its 20 s timeout on the host
        co_tenant = threads.submit(slow, {"sleepS": 5, "write": str(tmp_path / "co-tenant")})
        time.sleep(0.3)
        # WHEN another one on the same host times out
        with pytest.raises(FunctionError) as timed_out:
            quick({"sleepS": 5, "write": str(tmp_path / "timed-out")})
        assert timed_out.value.error_type == "Sandbox.Timedout"
        # THEN the first is answered as recycled, at once, and the host goes
        with pytest.raises(Recycled):
            co_tenant.result(timeout=3)
    assert host.proc is not None and host.proc.wait(5) == RECYCLE_EXIT_CODE
