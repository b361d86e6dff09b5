"""An async client for the chat WebSocket API (protocol v1): connect, send, iterate deltas, resume.

    async with await ChatClient.connect(url, token=token) as client:
        reply = await client.send("Hello")
        async for piece in reply:
            print(piece, end="")
        print(reply.done.usage)

Deltas are yielded in `seq` order without gaps or repeats, whatever order they arrive in (a resume
replays what was missed while live deltas keep coming).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection

from lambdas import protocol

GATEWAY_INTERNAL_ERROR = "Internal server error"
MAX_RESENDS = 2


class ChatError(Exception):
    """An `error` frame from the server."""

    def __init__(self, frame: protocol.Error) -> None:
        super().__init__(f"{frame.code}: {frame.message}")
        self.frame = frame
        self.code = frame.code


class Reply:
    """One answer being streamed."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.ack: asyncio.Future[protocol.Ack] = asyncio.get_running_loop().create_future()
        self.done: protocol.Done | None = None
        self.error: protocol.Error | None = None
        self.next_seq = 1
        self.sent_at = time.perf_counter()
        self.first_delta_at: float | None = None
        self._pending: dict[int, tuple[str, bool]] = {}
        self.restarts = 0  # deltas that replaced the text so far (a takeover after a worker died)
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.text_so_far = ""
        self.frame: str | None = None  # the sendMessage frame as sent (resent after a gateway failure)
        self.resends = 0

    # Called by the reader task.
    def _delta(self, frame: protocol.Delta) -> None:
        if frame.seq < self.next_seq or self.done is not None:
            return
        self._pending[frame.seq] = (frame.text, bool(frame.restart))
        while self.next_seq in self._pending:
            if self.first_delta_at is None:
                self.first_delta_at = time.perf_counter()
            piece, restart = self._pending.pop(self.next_seq)
            if restart:  # a worker took over with other text: this piece starts the answer anew
                self.restarts += 1
                self.text_so_far = piece
            else:
                self.text_so_far += piece
            self._queue.put_nowait(piece)
            self.next_seq += 1

    def _finish(self, frame: protocol.Done | protocol.Error) -> None:
        if self.done is not None or self.error is not None:
            return
        if isinstance(frame, protocol.Done):
            self.done = frame
            if frame.text is not None:  # the whole answer (its deltas were no longer kept)
                self.text_so_far = frame.text
        else:
            self.error = frame
            if not self.ack.done():
                self.ack.set_exception(ChatError(frame))
                self.ack.exception()  # also raised to whoever iterates: not an unretrieved error
        self._queue.put_nowait(None)

    def _reopen(self) -> None:
        """Follow again after the old connection closed: drop its end-of-stream marker."""
        self.error = None
        old, self._queue = self._queue, asyncio.Queue()
        while not old.empty():
            piece = old.get_nowait()
            if piece is not None:
                self._queue.put_nowait(piece)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        while True:
            piece = await self._queue.get()
            if piece is None:
                if self.error is not None:
                    raise ChatError(self.error)
                return
            yield piece

    async def text(self, timeout: float | None = 120) -> str:
        """Wait for the whole answer; raises ChatError on an error frame."""

        async def collect() -> str:
            async for _ in self:
                pass
            return self.text_so_far

        return await asyncio.wait_for(collect(), timeout)

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_delta_at is None else self.first_delta_at - self.sent_at


class ChatClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.replies: dict[str, Reply] = {}
        self.events: asyncio.Queue[protocol.ServerFrame] = asyncio.Queue()  # frames of no known request
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, url: str, *, token: str | None = None, api_key: str | None = None, open_timeout: float = 30
    ) -> ChatClient:
        if token:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode({'token': token})}"
        headers = {"x-api-key": api_key} if api_key else None
        ws = await websockets.connect(
            url, additional_headers=headers, open_timeout=open_timeout, max_size=2**20, ping_interval=None
        )
        return cls(ws)

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    frame = protocol.parse_server_frame(raw)
                except ValueError:  # not one of our frames: API Gateway's own status message
                    await self._gateway_message(raw)
                    continue
                rid = getattr(frame, "request_id", None)
                reply = self.replies.get(rid) if rid else None
                if reply is None:
                    await self.events.put(frame)
                elif isinstance(frame, protocol.Ack):
                    if not reply.ack.done():
                        reply.ack.set_result(frame)
                elif isinstance(frame, protocol.Delta):
                    reply._delta(frame)
                elif isinstance(frame, protocol.Done | protocol.Error):
                    reply._finish(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            for reply in self.replies.values():
                if reply.done is None and reply.error is None:
                    reply._queue.put_nowait(None)
                    reply.error = protocol.Error(
                        requestId=reply.request_id,
                        code="INTERNAL",
                        message="The connection closed before the answer ended.",
                    )

    async def _gateway_message(self, raw: str | bytes) -> None:
        """API Gateway answers a route whose integration failed with `{"message": "Internal server
        error", "connectionId", "requestId"}` (its own request id, not ours). Nothing says which
        request it was, so every sendMessage not yet acknowledged is sent again: the same requestId
        never yields two answers (docs/protocol.md). After MAX_RESENDS the reply fails instead."""
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict) or message.get("message") != GATEWAY_INTERNAL_ERROR:
            return  # e.g. "Forbidden" for a frame no route matched: nothing of ours to retry
        for reply in list(self.replies.values()):
            if reply.ack.done() or reply.done is not None or reply.error is not None or reply.frame is None:
                continue
            if reply.resends >= MAX_RESENDS:
                reply._finish(
                    protocol.Error(
                        requestId=reply.request_id,
                        code="INTERNAL",
                        message="The gateway failed to deliver the message; send it again later.",
                    )
                )
                continue
            reply.resends += 1
            with contextlib.suppress(websockets.ConnectionClosed):
                await self.ws.send(reply.frame)

    async def send_raw(self, data: str | dict[str, Any]) -> None:
        await self.ws.send(data if isinstance(data, str) else json.dumps(data))

    async def send(
        self,
        text: str,
        *,
        conversation_id: str | None = None,
        request_id: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> Reply:
        rid = request_id or str(uuid.uuid4())
        reply = self.replies.get(rid) or Reply(rid)
        self.replies[rid] = reply
        frame: dict[str, Any] = {"action": "sendMessage", "requestId": rid, "text": text}
        if conversation_id:
            frame["conversationId"] = conversation_id
        if options:
            frame["options"] = options
        reply.frame = json.dumps(frame)
        await self.send_raw(reply.frame)
        return reply

    async def resume(self, request_id: str, after_seq: int = 0, reply: Reply | None = None) -> Reply:
        """Follow a request on this connection, replaying what came after `after_seq`."""
        reply = reply or self.replies.get(request_id) or Reply(request_id)
        if reply.done is None:
            reply._reopen()
        if reply.next_seq <= after_seq:
            reply.next_seq = after_seq + 1
        if not reply.ack.done():
            reply.ack.set_result(protocol.Ack(requestId=request_id, conversationId="", messageId=""))
        self.replies[request_id] = reply
        await self.send_raw({"action": "resume", "requestId": request_id, "afterSeq": after_seq})
        return reply

    async def cancel(self, request_id: str) -> None:
        await self.send_raw({"action": "cancel", "requestId": request_id})

    async def ping(self, timeout: float = 10) -> None:
        await self.send_raw({"action": "ping"})
        while True:
            frame = await asyncio.wait_for(self.events.get(), timeout)
            if isinstance(frame, protocol.Pong):
                return

    async def next_event(self, timeout: float = 10) -> protocol.ServerFrame:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
