"""One chat as a client sees it: a connection following a requestId, and what happened to it."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field

from websockets.exceptions import InvalidStatus

from chatstack.chaos.service import NETWORK_ERRORS, ServiceDir
from chatstack.client import ChatClient, Reply
from lambdas import protocol

# Three long sentences the extractive backend quotes back: ~85 tokens, a few seconds at --token-rate 20.
PROMPT = (
    "Chaos engineering breaks a running service on purpose to learn how the service heals itself after "
    "each fault. A healthy service answers every chat even while a fault breaks one of its processes and "
    "the service heals. Each fault in the chaos suite kills a process of the running service mid-stream "
    "and measures how long the service takes to heal. How does the service heal after a fault?"
)
PROBE = "The probe checks that a new chat succeeds. Does a new chat succeed?"


class TrackedReply(Reply):
    """A Reply that notes when its stream ended with a server frame."""

    def __init__(self, request_id: str) -> None:
        super().__init__(request_id)
        self.ended = asyncio.Event()
        self.streaming = asyncio.Event()
        self.ended_at: float | None = None
        self.seqs: list[int] = []  # every delta's seq as it arrived (repeats and restarts included)

    def _delta(self, frame: protocol.Delta) -> None:
        self.seqs.append(-frame.seq if frame.restart else frame.seq)
        super()._delta(frame)
        self.streaming.set()

    def _finish(self, frame: protocol.Done | protocol.Error) -> None:
        super()._finish(frame)
        if not self.ended.is_set():
            self.ended_at = time.monotonic()
            self.ended.set()

    def _reopen(self) -> None:
        super()._reopen()
        self.ended.clear()
        self.ended_at = None


@dataclass
class Follow:
    """One connection following one requestId."""

    client: ChatClient
    reply: TrackedReply

    @classmethod
    async def open(cls, service: ServiceDir, user: str, request_id: str) -> Follow:
        client = await ChatClient.connect(service.websocket, token=service.token(user), open_timeout=10)
        reply = TrackedReply(request_id)
        client.replies[request_id] = reply
        return cls(client, reply)

    async def end(self, timeout: float) -> tuple[str, float | None]:
        """How the stream ended: done, error, closed (no frame, the connection went) or hung."""
        ended = asyncio.ensure_future(self.reply.ended.wait())
        # The client's reader task ends when the connection closes (after the frames before it).
        reader = self.client._reader
        await asyncio.wait({ended, reader}, timeout=max(timeout, 0), return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        if self.reply.ended.is_set():
            return ("done" if self.reply.done else "error"), self.reply.ended_at
        if reader.done():
            return "closed", time.monotonic()
        return "hung", None

    async def close(self) -> None:
        with contextlib.suppress(*NETWORK_ERRORS):
            await asyncio.wait_for(self.client.close(), 5)
        for reply in self.client.replies.values():
            if reply.ack.done() and not reply.ack.cancelled():
                reply.ack.exception()  # an error before the ack is recorded already; do not log it again


@dataclass
class Chat:
    index: int
    user: str
    request_id: str
    follows: list[Follow] = field(default_factory=list)
    conversation_id: str = ""
    outcome: str = ""  # done, error, closed, hung
    codes: list[str] = field(default_factory=list)
    ended_at: float | None = None
    answered_by: str = ""  # stream, resume, resend; empty: no answer reached
    final_error: str = ""  # no answer, and the last re-send was answered with this error
    streamed: list[str] = field(default_factory=list)  # whole answers as streamed from seq 1
    seqs: list[list[int]] = field(default_factory=list)  # the seqs each of those streams received
    stored_users: int = 0
    stored_answers: int = 0
    stored_text: str = ""
    conversations: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    spent: list[Follow] = field(default_factory=list)  # connections a fault dropped


def failure(exc: BaseException) -> str:
    """An exception in a few words (a refused handshake's repr runs to a screenful)."""
    if isinstance(exc, InvalidStatus):
        return f"handshake refused with HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def describe(outcome: str, reply: Reply) -> str:
    error = reply.error if outcome == "error" else None
    return f"{outcome} {error.code}: {error.message}" if error else outcome


async def chat_works(service: ServiceDir, timeout: float = 30) -> bool:
    """One new chat ends `done` within `timeout` (also warms the service before a fault)."""
    deadline = time.monotonic() + timeout
    try:
        user = f"chaos-ready-{uuid.uuid4().hex[:8]}"
        follow = await asyncio.wait_for(Follow.open(service, user, str(uuid.uuid4())), timeout)
    except NETWORK_ERRORS:
        return False
    try:
        await follow.client.send(PROBE, request_id=follow.reply.request_id)
        outcome, _ = await follow.end(deadline - time.monotonic())
        return outcome == "done"
    except NETWORK_ERRORS:
        return False
    finally:
        await follow.close()
