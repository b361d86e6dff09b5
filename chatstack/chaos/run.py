"""One fault run: chats, the fault, how each stream ended, recovery as a client does it, the audit."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from asyncio import FIRST_COMPLETED
from dataclasses import dataclass, field
from typing import Any

import httpx

from chatstack.chaos.chats import PROBE, PROMPT, Chat, Follow, TrackedReply, chat_works, describe, failure
from chatstack.chaos.faults import Fault, Injected, Run
from chatstack.chaos.service import NETWORK_ERRORS, ServiceDir
from chatstack.chaos.verdict import OBSERVE_HEAL_S, SETTLE_S, SILENCE_S, FaultResult

RECOVER_S = 30.0  # how long clients retry (resume, then the same sendMessage) after the service healed


async def run_fault(service: ServiceDir, fault: Fault, chats: int = 20) -> FaultResult:
    """Inject `fault` while `chats` answers stream; what is recorded: see the `chatstack.chaos` docstring."""
    tag = f"{fault.name}-{uuid.uuid4().hex[:6]}"
    run = Run(service, fault, [Chat(i, f"chaos-{tag}-{i}", str(uuid.uuid4())) for i in range(chats)])
    injected: Injected | None = None
    probe = Probe()
    try:
        await asyncio.gather(*(_start(run, chat) for chat in run.chats))
        streaming = 0 if fault.twins else await _streaming(run.chats)
        fault_at = time.monotonic()
        injected = await fault.inject(run)
        heal = asyncio.create_task(_heal(service, fault_at, tag, probe))
        await asyncio.gather(*(_follow(run, chat, fault_at) for chat in run.chats))
        heal_s = await heal
        waiting = [c for c in run.chats if c.outcome != "done"]
        recover_s = RECOVER_S if heal_s is not None else 5.0  # not healed: one short try each
        await asyncio.gather(*(_recover(service, c, time.monotonic() + recover_s) for c in waiting))
        async with httpx.AsyncClient(base_url=service.base, timeout=10) as rest:
            await asyncio.gather(*(_audit(service, rest, chat) for chat in run.chats))
    finally:
        if injected is not None and injected.background is not None:
            injected.background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await injected.background
        await asyncio.gather(*(f.close() for chat in run.chats for f in (*chat.follows, *chat.spent)))
    assert injected is not None
    ends = [c.ended_at for c in run.chats]
    last = None if None in ends else max(0.0, *(e - fault_at for e in ends if e is not None))
    slowest = max(probe.first_frames, default=None)
    notes = [
        *injected.notes,
        *([f"slowest ack or error of a new sendMessage: {slowest:.1f} s"] if slowest else []),
    ]
    return FaultResult(
        fault, run.chats, streaming, injected.hit, last, heal_s, probe.failures, probe.silent, notes
    )


async def _start(run: Run, chat: Chat) -> None:
    follows = [await Follow.open(run.service, chat.user, chat.request_id) for _ in range(1 + run.fault.twins)]
    chat.follows = follows
    await asyncio.gather(*(f.client.send(PROMPT, request_id=chat.request_id) for f in follows))
    if not run.fault.twins:
        ack = await asyncio.wait_for(follows[0].reply.ack, 30)
        chat.conversation_id = ack.conversation_id
        chat.conversations.add(ack.conversation_id)


async def _streaming(chats: list[Chat], timeout: float = 45) -> int:
    """Wait until every answer has its first delta or has ended, so that the fault lands mid-stream
    (some jobs wait seconds for a retry); answers how many are streaming now."""
    waits = [_first(f.reply.streaming, f.reply.ended) for c in chats for f in c.follows]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*waits), timeout)
    return sum(
        1 for c in chats if c.follows[0].reply.streaming.is_set() and not c.follows[0].reply.ended.is_set()
    )


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _follow(run: Run, chat: Chat, fault_at: float) -> None:
    """Wait for the end of each of the chat's streams, as its client would (reconnecting after a drop)."""
    deadline = fault_at + SETTLE_S
    if run.fault.drop:
        old = chat.follows[0]
        await asyncio.wait({old.client._reader}, timeout=deadline - time.monotonic())
        chat.spent.append(old)
        try:
            new = await Follow.open(run.service, chat.user, chat.request_id)
            chat.follows = [Follow(new.client, old.reply)]
            await new.client.resume(chat.request_id, after_seq=old.reply.next_seq - 1, reply=old.reply)
        except NETWORK_ERRORS as exc:
            chat.outcome = "hung"
            chat.notes.append(f"reconnect: {failure(exc)}")
            return
    outcomes = [await f.end(deadline - time.monotonic()) for f in chat.follows]
    rank = ["hung", "closed", "error", "done"]
    chat.outcome = min((o for o, _ in outcomes), key=rank.index)
    ends = [t for _, t in outcomes]
    chat.ended_at = None if None in ends else max(t for t in ends if t is not None)
    for f in chat.follows:
        if f.reply.error is not None and f.reply.ended.is_set():
            chat.codes.append(f.reply.error.code)
            chat.notes.append(f"stream: {describe('error', f.reply)}")
        if f.reply.ack.done() and not f.reply.ack.exception():
            chat.conversation_id = chat.conversation_id or f.reply.ack.result().conversation_id
            chat.conversations.add(f.reply.ack.result().conversation_id)
    if chat.outcome == "done":
        chat.answered_by = "stream"
        chat.streamed = [f.reply.text_so_far for f in chat.follows if f.reply.text_so_far]
        chat.seqs = [f.reply.seqs for f in chat.follows if f.reply.text_so_far]


@dataclass
class Probe:
    """The new chats tried after the fault, until one succeeded."""

    failures: list[str] = field(default_factory=list)
    silent: int = 0  # sendMessages that got neither ack nor error within SILENCE_S
    first_frames: list[float] = field(default_factory=list)  # seconds from sendMessage to its ack or error


async def _heal(service: ServiceDir, fault_at: float, tag: str, probe: Probe) -> float | None:
    """Seconds from the fault to the first new chat that ends `done`; None if none within OBSERVE_HEAL_S.
    Each try is a new user, so tries that never settled do not count against the next one's limits."""
    tries = 0
    while (left := fault_at + OBSERVE_HEAL_S - time.monotonic()) > 0:
        started, tries = time.monotonic(), tries + 1
        try:
            follow = await asyncio.wait_for(
                Follow.open(service, f"chaos-{tag}-probe-{tries}", str(uuid.uuid4())), min(10, left)
            )
        except NETWORK_ERRORS as exc:
            probe.failures.append(f"connect: {failure(exc)}")
        else:
            try:
                sent, window = time.monotonic(), min(SILENCE_S, fault_at + OBSERVE_HEAL_S - time.monotonic())
                await follow.client.send(PROBE, request_id=follow.reply.request_id)
                reader = follow.client._reader  # ends when the connection closes
                waiters: set[asyncio.Future[Any]] = {follow.reply.ack, reader}
                await asyncio.wait(waiters, timeout=window, return_when=FIRST_COMPLETED)
                if follow.reply.ack.done():
                    probe.first_frames.append(time.monotonic() - sent)
                elif not reader.done() and window >= SILENCE_S:
                    probe.silent += 1
                outcome, ended_at = await follow.end(min(10, fault_at + OBSERVE_HEAL_S - time.monotonic()))
                if outcome == "done" and ended_at is not None:
                    return ended_at - fault_at
                probe.failures.append(describe(outcome, follow.reply))
            except NETWORK_ERRORS as exc:
                probe.failures.append(f"send: {failure(exc)}")
            finally:
                await follow.close()
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    return None


async def _recover(service: ServiceDir, chat: Chat, deadline: float) -> None:
    """What a client does after a failure: resume the requestId, else send the same sendMessage again."""
    while (left := deadline - time.monotonic()) > 0:
        started = time.monotonic()
        try:
            follow = await asyncio.wait_for(Follow.open(service, chat.user, chat.request_id), min(10, left))
        except NETWORK_ERRORS as exc:
            chat.notes.append(f"connect: {failure(exc)}")
            await asyncio.sleep(1)
            continue
        try:
            await follow.client.resume(chat.request_id, after_seq=0, reply=follow.reply)
            outcome, _ = await follow.end(min(8, deadline - time.monotonic()))
            if outcome == "done":
                chat.answered_by = "resume"
                chat.streamed = [follow.reply.text_so_far] if follow.reply.text_so_far else []
                return
            chat.notes.append(f"resume: {describe(outcome, follow.reply)}")
            again = TrackedReply(chat.request_id)
            follow.client.replies[chat.request_id] = again
            follow.reply = again
            await follow.client.send(PROMPT, request_id=chat.request_id)
            outcome, _ = await follow.end(min(20, deadline - time.monotonic()))
            if again.ack.done() and not again.ack.exception():
                chat.conversations.add(again.ack.result().conversation_id)
                chat.conversation_id = chat.conversation_id or again.ack.result().conversation_id
            if outcome == "done":
                chat.answered_by = "resend"
                chat.streamed = [again.text_so_far] if again.text_so_far else []
                return
            chat.notes.append(f"resend: {describe(outcome, again)}")
            # An error frame is an outcome the client was told; silence is not. Retry until the deadline.
            chat.final_error = describe(outcome, again) if outcome == "error" else ""
            retry_after = again.error.retry_after if again.error and again.error.retry_after else 2.0
            await asyncio.sleep(min(retry_after, 5.0, max(0.0, deadline - time.monotonic())))
        except NETWORK_ERRORS as exc:
            chat.notes.append(f"recover: {failure(exc)}")
        finally:
            await follow.close()
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


async def _audit(service: ServiceDir, rest: httpx.AsyncClient, chat: Chat) -> None:
    """Count the chat's stored messages through the REST API: one user message, at most one answer."""
    headers = {"Authorization": f"Bearer {service.token(chat.user)}"}
    if not chat.conversations:
        chat.notes.append("audit: no ack named a conversation")
    for conversation in chat.conversations:
        try:
            response = await rest.get(f"/v1/conversations/{conversation}/messages", headers=headers)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            chat.notes.append(f"audit: {failure(exc)}")
            continue
        mine = [m for m in response.json()["items"] if m["requestId"] == chat.request_id]
        chat.stored_users += sum(1 for m in mine if m["role"] == "user")
        answers = [m for m in mine if m["role"] == "assistant"]
        chat.stored_answers += len(answers)
        if answers:
            chat.stored_text = answers[0]["content"]


async def ensure_ready(service: ServiceDir, patience_s: float = 30) -> bool:
    """Make sure a chat works before the next fault: restart the service if a fault left it broken.
    Answers whether it had to restart. (A service's first chat may wait for models to load.)"""
    if await asyncio.to_thread(service.healthy) and await chat_works(service, patience_s):
        return False
    await service.restart()
    if not await chat_works(service, timeout=60):
        raise RuntimeError(f"A chat fails even after restarting `chatstack up` on {service.data_dir}.")
    return True
