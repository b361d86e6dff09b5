"""Fault injection against a running `chatstack up`: break one part mid-stream and record what clients see.

For one named fault: open N concurrent chats against the service of a data directory, wait until every
answer is streaming, inject the fault, then record for each requestId how its stream ended (`done`,
`error`, the connection closed, or nothing within 30 s), whether it reaches a stored answer afterwards
by `resume` or by re-sending the same sendMessage (what a client does, no manual step), whether anything
was stored twice, and how long the service took to answer a new chat. One fault gives one table row.

The promises checked are those of docs/protocol.md ("every failure ends in a frame", "one answer per
requestId") and issue 9 (a new chat succeeds within 30 s of a fault, with no manual step).
"""

from __future__ import annotations

from chatstack.chaos.chats import Chat, chat_works
from chatstack.chaos.faults import FAULTS, Fault
from chatstack.chaos.run import ensure_ready, run_fault
from chatstack.chaos.service import ServiceDir
from chatstack.chaos.verdict import HEAL_LIMIT_S, OBSERVE_HEAL_S, SETTLE_S, FaultResult, table

__all__ = [
    "FAULTS",
    "HEAL_LIMIT_S",
    "OBSERVE_HEAL_S",
    "SETTLE_S",
    "Chat",
    "Fault",
    "FaultResult",
    "ServiceDir",
    "chat_works",
    "ensure_ready",
    "run_fault",
    "table",
]
