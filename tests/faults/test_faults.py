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

import pytest

from chatstack.chaos import FAULTS, FaultResult, ServiceDir, ensure_ready, run_fault

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
CHATS = 12


@pytest.mark.parametrize("name", list(FAULTS))
async def test_every_chat_ends_and_is_answered_once_and_the_service_heals_after(
    name: str, chaos_service: ServiceDir, fault_table: list[FaultResult]
) -> None:
    await ensure_ready(chaos_service)
    result = await run_fault(chaos_service, FAULTS[name], chats=CHATS)
    fault_table.append(result)
    assert result.problems() == [], "\n".join([*result.problems(), *result.details()])
