"""The fault suite (issue 9): for each fault, 12 chats stream through a real `chatstack up` (real
WebSocket clients, the real handlers in Lambda host processes, embedded PostgreSQL and Redis, the local
model server) when the fault is injected mid-stream by killing or stopping a real process.

Each test checks the guarantees of docs/protocol.md and issue 9 against what the clients saw:
- every chat ends in `done` or `error` within 30 s of the fault (a closed connection counts only when
  the fault killed the gateway itself);
- afterwards every requestId reaches a stored answer by `resume` or by re-sending the same
  `sendMessage`, as a client would, with no manual step;
- no requestId has two user messages or two answers (counted through the REST API);
- an answer streamed whole equals the stored one (no gap or repeat after a resume);
- a new chat succeeds within 30 s of the fault.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from chatstack.chaos import FAULTS, FaultResult, ServiceDir, ensure_ready, run_fault

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
CHATS = 12


async def test_chatstack_chaos_prints_the_table_for_a_running_service(chaos_service: ServiceDir) -> None:
    """The command a person runs: it finds the service by its data dir and prints one row per fault."""
    command = [sys.executable, "-m", "chatstack.cli", "chaos", "--fault", "client-drop", "--chats", "4"]
    run = await asyncio.to_thread(
        subprocess.run,
        [*command, "--data-dir", str(chaos_service.data_dir)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("| fault | chats | mid-stream | done | error |")
    assert lines[2].startswith("| client-drop | 4 |") and lines[2].endswith("| pass |")


def test_chatstack_chaos_without_a_fault_says_what_to_do() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "chatstack.cli", "chaos"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert "Name a fault with --fault NAME, or use --all." in run.stderr


@pytest.mark.parametrize("name", list(FAULTS))
async def test_every_chat_ends_and_is_answered_once_and_the_service_heals_after(
    name: str, chaos_service: ServiceDir, fault_table: list[FaultResult]
) -> None:
    await ensure_ready(chaos_service)
    result = await run_fault(chaos_service, FAULTS[name], chats=CHATS)
    fault_table.append(result)
    assert result.problems() == [], "\n".join([*result.problems(), *result.details()])
