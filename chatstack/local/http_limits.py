"""uvicorn protocols that answer oversized or slow requests instead of hanging on them.

uvicorn parses the request head with httptools and hands a WebSocket upgrade to the `websockets`
sans-I/O protocol, which re-parses it with an 8 KB line limit: a longer request line or header makes
that parser fail silently, and the client waits forever. A client that sends its head slowly is
never timed out either. These subclasses enforce what API Gateway enforces in front of the cloud
service, before any application code runs:

- a request line (the URL) over `MAX_URL_BYTES` -> 414 URI Too Long, connection closed;
- a header line over `MAX_HEADER_LINE_BYTES`, all headers over `MAX_HEADER_BYTES`, or more than
  `MAX_HEADERS` of them -> 431 Request Header Fields Too Large, connection closed;
- a request head not complete within `head_timeout_s` of the connection (or of the request's first
  byte, on a kept-alive connection) -> 408 Request Timeout, connection closed;
- a WebSocket handshake the `websockets` parser still refuses -> 400, connection closed.

The WebSocket protocol also holds less per connection (docs/benchmarks.md, memory per held
connection): it lets go of the upgrade request's headers and the response once the socket is
accepted, and uses lighter stand-ins for its `asyncio.Queue` and `asyncio.Event` (each of their
deques costs about 0.7 KiB).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httptools
from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

logger = logging.getLogger("chatstack.security")

# Below the `websockets` parser's 8,192-byte line limit, with room for "GET ", " HTTP/1.1" and CRLF.
MAX_URL_BYTES = 8000
MAX_HEADER_LINE_BYTES = 8000
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT_S = 10.0

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


def _refusal(status: int, message: str) -> bytes:
    """A whole response in the project's error shape, for a connection about to be closed."""
    code = "TOO_LARGE" if status in (414, 431) else "BAD_REQUEST"
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
    return head % (status, _REASONS[status], len(body)) + b"connection: close\r\n\r\n" + body


_MESSAGES = {
    400: "The WebSocket handshake is malformed.",
    408: "The request head was not received in time.",
    414: "The request line is too long.",
    431: "The request headers are too large.",
}


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """httptools with limits on the request head and a deadline for receiving it."""

    head_timeout_s = HEAD_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._url_bytes = 0
        self._header_bytes = 0
        self._header_count = 0
        self._refused: int | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._refuse(408)

    def _refuse(self, status: int) -> None:
        self._disarm()
        client = self.client[0] if self.client else "?"
        logger.info("request refused before the application: %d from %s", status, client)
        self.transport.write(_refusal(status, _MESSAGES[status]))
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused is not None or self.transport.is_closing():
            return
        if self._head_timer is None and self.cycle is not None and self.cycle.response_complete:
            self._arm()  # a new request on a kept-alive connection gets its own deadline
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:  # also a refusal raised in one of our callbacks
            if self._refused is not None:
                self._refuse(self._refused)
                return
            self.logger.info("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = self._header_bytes = self._header_count = 0

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > MAX_URL_BYTES:
            self._refused = 414
            raise ValueError("request line too long")  # httptools stops parsing and raises its error
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        line = len(name) + len(value) + 4
        self._header_bytes += line
        self._header_count += 1
        too_many = self._header_bytes > MAX_HEADER_BYTES or self._header_count > MAX_HEADERS
        if line > MAX_HEADER_LINE_BYTES or too_many:
            self._refused = 431
            raise ValueError("request headers too large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()


class _Inbox:
    """What uvicorn's WebSocket protocol uses of its `asyncio.Queue` (`put_nowait`, `get`, `empty`),
    for its one reader, the application's `receive`. The protocol pauses reading after each message,
    so a few messages are queued at most."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[ASGIReceiveEvent] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: ASGIReceiveEvent) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class _Flag:
    """What uvicorn's WebSocket protocol uses of its `asyncio.Event` `writable` (`wait`, `set`,
    `clear`), without the deque an Event allocates up front: waiters exist only while the client's
    buffer is full."""

    __slots__ = ("_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = True
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        self._is_set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._is_set = False

    async def wait(self) -> None:
        while not self._is_set:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter


class LimitedWebSocketProtocol(WebSocketsSansIOProtocol):
    """The `websockets` sans-I/O protocol, answering a handshake its parser refuses instead of hanging,
    and holding less per connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]  # the three methods the protocol calls
        self.writable = _Flag()  # type: ignore[assignment]  # set, as uvicorn's Event starts

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # Read only to answer the handshake, they would stay for the connection's life; the
            # `websockets` parser's suspended generator keeps the request itself, so empty its headers.
            self.request.headers.clear()
            self.__dict__.pop("request", None)
            self.__dict__.pop("response", None)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        refused = self.conn.handshake_exc is not None and not self.handshake_initiated
        if refused and not self.transport.is_closing():
            self.transport.write(_refusal(400, _MESSAGES[400]))
            self.transport.close()


def with_head_timeout(timeout_s: float) -> type[LimitedHttpToolsProtocol]:
    """The protocol class with another head deadline (uvicorn takes a class, not an instance)."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"head_timeout_s": timeout_s})
