"""A local API Gateway WebSocket API: same handshake, routing, events, limits and @connections API.

The handlers that run behind API Gateway in the cloud run here unchanged: the REQUEST authorizer and
`$connect` decide the handshake, messages are routed on `$request.body.action`, every close ends in
one `$disconnect`, and the handlers answer clients through boto3's `apigatewaymanagementapi` client
pointed at this server (`endpoint_url="http://HOST:PORT"`), never through a local shortcut.

Handlers are synchronous and may block (Redis, PostgreSQL, boto3 calls back into this server), so
each invocation runs in a worker thread; the event loop only moves frames.

Frame size (32 KB in API Gateway): ASGI hands the application whole messages and sends each
`websocket.send` as one frame, so frames are not seen here. Incoming messages are limited to
128 KB (close 1009, as API Gateway); outgoing messages up to 128 KB go out as one frame, which any
conforming client reassembles exactly as it does API Gateway's 32 KB fragments. Serve with
`ws_max_size=MAX_MESSAGE_BYTES` (see `server_options`) so that oversized input is refused before
it is buffered whole.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from chatstack.local.internal_auth import body_of
from chatstack.local.lambda_context import Handler, invoke
from chatstack.local.process import usable_cores
from chatstack.local.threads import Threads
from lambdas import wiring

logger = logging.getLogger(__name__)

GOING_AWAY = (1001, "Going away")
ROUTES_PER_CORE = 4  # message-route invocations at once, per CPU core (GatewayEmulator.__init__)
_PREDEFINED_ROUTES = frozenset({"$connect", "$disconnect", "$default"})


def _aws_id() -> str:
    """An id shaped like API Gateway's connection and request ids ("L0SM9cOFvHcCIhw=")."""
    return base64.b64encode(os.urandom(11)).decode("ascii")


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Refused(Exception):
    """The handshake is refused with this HTTP status (authorizer or `$connect` said no)."""

    def __init__(self, status: int, message: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)
class _Connection:
    id: str
    websocket: WebSocket
    source_ip: str
    user_agent: str | None
    domain_name: str
    opened: float  # event-loop clock, for the limits
    connected_at_ms: int
    authorizer: dict[str, Any] | None = None
    last_active: float = 0.0
    last_active_epoch: float = 0.0
    limits_timer: asyncio.TimerHandle | None = None
    # Set by whoever closes the socket from this side: (close code, reason the $disconnect event gives).
    closed_by_server: tuple[int, str] | None = None
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Done when the session ends (aclose() waits for it). A future, not an asyncio.Event: an Event
    # allocates a deque of waiters, about 0.7 KiB per held connection.
    finished: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def touch(self) -> None:
        self.last_active = asyncio.get_running_loop().time()
        self.last_active_epoch = time.time()


@dataclass(frozen=True)
class _Handshake:
    """What the authorizer and `$connect` see of the upgrade request."""

    request_id: str
    headers: dict[str, str]
    multi_headers: dict[str, list[str]]
    query: list[tuple[str, str]]


class GatewayEmulator:
    """An API Gateway WebSocket API and its @connections management API, as Starlette routes."""

    def __init__(
        self,
        *,
        routes: Mapping[str, Handler],
        authorizer: Handler | None,
        api_id: str = "local",
        stage: str = wiring.STAGE_NAME,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        ws_path: str = "/ws",
        idle_timeout_s: float = wiring.IDLE_TIMEOUT_S,
        max_connection_s: float = wiring.MAX_CONNECTION_S,
        max_message_bytes: int = wiring.MAX_MESSAGE_BYTES,
        send_timeout_s: float = 10.0,
        thread_tokens: int = 1000,
        new_connection_id: Callable[[], str] = _aws_id,
        route_concurrency: int | None = None,
    ) -> None:
        self.handlers = dict(routes)
        # Message routes (sendMessage, ping, cancel...) invoked at once; later messages wait their turn
        # in arrival order. In the cloud every invocation has a CPU of its own; here they share a
        # laptop's few cores, and fifty invocations run interleaved all finish late together. Under a
        # burst of 50 chats, run a few at a time in arrival order, the median added time to first
        # token fell by about a third in alternated runs (docs/benchmarks.md, "Pipeline overhead").
        # $connect, $disconnect and the authorizer are not held back.
        self._route_gate = asyncio.Semaphore(route_concurrency or ROUTES_PER_CORE * usable_cores())
        self.authorizer = authorizer
        self.api_id = api_id
        self.stage = stage
        self.region = region
        self.account_id = account_id
        self.ws_path = ws_path
        self.idle_timeout_s = idle_timeout_s
        self.max_connection_s = max_connection_s
        self.max_message_bytes = max_message_bytes
        # A client that stops reading fills its buffer; API Gateway then answers 429 LimitExceeded.
        self.send_timeout_s = send_timeout_s
        self._new_connection_id = new_connection_id
        self._threads = Threads(thread_tokens, "gateway")
        self._connections: dict[str, _Connection] = {}
        self._sessions: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._shutting_down = False
        self._cut_at_shutdown = 0  # sessions the server cancelled when its graceful shutdown timed out

    # -- public surface -------------------------------------------------------------------------

    @property
    def routes(self) -> list[BaseRoute]:
        """The WebSocket endpoint and `@connections/{id}` (also under `/{stage}`, as in AWS)."""
        methods = ["GET", "POST", "DELETE"]
        return [
            WebSocketRoute(self.ws_path, self._session),
            Route("/@connections/{connection_id:path}", self._manage, methods=methods),
            Route(f"/{self.stage}/@connections/{{connection_id:path}}", self._manage, methods=methods),
        ]

    def in_front_of(self, app: ASGIApp) -> ASGIApp:
        """The WebSocket endpoint as a bare ASGI app, passing every other request to `app`.

        Served this way rather than as a route of `app`, a held socket keeps no Starlette routing,
        exception-handling or middleware coroutine frames alive (about 4 KiB per connection)."""

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "websocket" and scope["path"] == self.ws_path:
                try:
                    await self._session(WebSocket(scope, receive, send))
                except asyncio.CancelledError:
                    # uvicorn cancels the sessions still open when its graceful shutdown times out
                    # (thousands of held sockets whose $disconnect had not run yet). The socket ends
                    # with the service: counted and reported in one line by aclose(), instead of a
                    # traceback per socket.
                    self._cut_at_shutdown += 1
            else:
                await app(scope, receive, send)

        return dispatch

    @property
    def server_options(self) -> dict[str, Any]:
        """uvicorn settings that apply API Gateway's limits in the server itself: the message size, the
        request head's size and deadline (chatstack/local/http_limits.py), and the client address from
        the socket peer: `X-Forwarded-For` counts only from `CHATSTACK_TRUSTED_PROXIES` (uvicorn would
        otherwise trust it from 127.0.0.1, letting any local client pick its per-IP limit bucket)."""
        from chatstack.local.http_limits import LimitedHttpToolsProtocol, LimitedWebSocketProtocol
        from lambdas.config import get_settings

        trusted = get_settings().trusted_proxies
        return {
            "ws_max_size": self.max_message_bytes,
            # permessage-deflate keeps a zlib compressor and decompressor per connection (about 33 KiB
            # of the 70 a held connection cost, docs/benchmarks.md) to shrink frames on loopback.
            "ws_per_message_deflate": False,
            # No server pings (uvicorn sends one every 20 s by default, a timer per connection): API
            # Gateway sends none either, and a vanished client is closed by the idle timeout as there.
            "ws_ping_interval": None,
            "http": LimitedHttpToolsProtocol,
            "ws": LimitedWebSocketProtocol,
            "proxy_headers": bool(trusted),
            "forwarded_allow_ips": trusted or "",
        }

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def method_arn(self) -> str:
        return f"arn:aws:execute-api:{self.region}:{self.account_id}:{self.api_id}/{self.stage}/$connect"

    async def aclose(self) -> None:
        """Close every socket with 1001 "Going away" and wait for every `$disconnect` and handler."""
        self._shutting_down = True
        if self._cut_at_shutdown:
            logger.warning(
                "%d WebSocket sessions were still open when the server's graceful shutdown ended; "
                "they closed without $disconnect",
                self._cut_at_shutdown,
            )
        for connection in list(self._connections.values()):
            await self._close(connection, *GOING_AWAY)
        if self._sessions:
            await asyncio.wait([connection.finished for connection in self._sessions])
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- invocation -----------------------------------------------------------------------------

    async def _invoke(self, handler: Handler, event: dict[str, Any]) -> Any:
        return await self._threads.run(invoke, handler, event)

    # -- the WebSocket session ------------------------------------------------------------------

    async def _session(self, websocket: WebSocket) -> None:
        await websocket.receive()  # "websocket.connect"
        client = websocket.scope.get("client")
        now = time.time()
        # Not `websocket.headers`: that caches a Headers object for the connection's life.
        headers, multi_headers = self._headers(websocket)
        first = {name.lower(): values[0] for name, values in reversed(multi_headers.items())}
        connection = _Connection(
            id=self._new_connection_id(),
            websocket=websocket,
            source_ip=client[0] if client else "127.0.0.1",
            user_agent=first.get("user-agent"),
            domain_name=first.get("host", "localhost"),
            opened=asyncio.get_running_loop().time(),
            connected_at_ms=int(now * 1000),
        )
        connection.touch()
        query = parse_qsl(websocket.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        handshake = _Handshake(_aws_id(), headers, multi_headers, query)
        del headers, multi_headers, first
        self._sessions.add(connection)  # from here on, aclose() waits for this session
        try:
            try:
                if self._shutting_down:
                    raise _Refused(503, "Service Unavailable")
                connection.authorizer = await self._authorize(connection, handshake)
                subprotocol = await self._connect(connection, handshake)
                # Not kept alive for the connection's lifetime: the authorizer and $connect were the
                # last to read the handshake's headers, and the server keeps the scope (about 1 KiB).
                del handshake, query
                websocket.scope["headers"] = []
            except _Refused as refused:
                await self._refuse(websocket, refused)
                return
            await self._open(connection, subprotocol)
        finally:
            connection.finished.set_result(None)
            self._sessions.discard(connection)

    async def _open(self, connection: _Connection, subprotocol: str | None) -> None:
        """From an accepted `$connect` to `$disconnect`, which runs once whatever ends the session."""
        code, reason = 1006, "Client disconnected during the handshake"
        try:
            try:
                await connection.websocket.accept(subprotocol=subprotocol)
            except Exception:  # the client left while $connect ran: accept() found no socket
                logger.debug("connection %s lost during the handshake", connection.id)
                return
            self._connections[connection.id] = connection
            if self._shutting_down:  # aclose() ran while the authorizer or $connect did
                await self._close(connection, *GOING_AWAY)
            code, reason = await self._serve(connection)
        finally:
            self._connections.pop(connection.id, None)
            await self._disconnect(connection, code, reason)

    async def _serve(self, connection: _Connection) -> tuple[int, str]:
        self._watch_limits(connection)
        try:
            while True:
                message = await connection.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    if connection.closed_by_server is not None:
                        return connection.closed_by_server
                    code = int(message.get("code") or 1005)
                    return code, self._client_close_reason(code, message.get("reason"))
                text: str | None = message.get("text")
                data: bytes = text.encode() if text is not None else (message.get("bytes") or b"")
                if len(data) > self.max_message_bytes:
                    await self._close(connection, 1009, "Message too big")
                    continue
                connection.touch()
                task = asyncio.create_task(self._route(connection, text, data))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                # While this loop waits for the next message (a held connection waits for minutes), it
                # keeps nothing of the last one: the message, its text and its finished task (with
                # the task's coroutine) were about 1.4 KiB per connection that had spoken.
                del message, text, data, task
        finally:
            if connection.limits_timer is not None:
                connection.limits_timer.cancel()

    def _watch_limits(self, connection: _Connection) -> None:
        """Closes the connection at its idle or maximum-duration deadline. A timer that re-arms itself
        rather than a task per connection: a held connection should cost little memory."""
        loop = asyncio.get_running_loop()
        idle_deadline = connection.last_active + self.idle_timeout_s
        deadline = min(idle_deadline, connection.opened + self.max_connection_s)
        if loop.time() < deadline:
            connection.limits_timer = loop.call_at(deadline, self._watch_limits, connection)
            return
        connection.limits_timer = None
        task = asyncio.create_task(self._close(connection, *GOING_AWAY))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, connection: _Connection, code: int, reason: str) -> None:
        if connection.closed_by_server is not None:
            return
        connection.closed_by_server = (code, reason)
        async with connection.send_lock:
            try:
                await connection.websocket.close(code, "" if code == 1000 else reason)
            except Exception:  # already gone: the session loop sees the disconnect anyway
                logger.debug("close of %s after the peer left", connection.id)

    @staticmethod
    def _client_close_reason(code: int, reason: str | None) -> str:
        if reason:
            return str(reason)
        if code == 1005:
            return "Client-side close frame status not set"
        return f"Client-side close frame status set to {code}"

    async def _refuse(self, websocket: WebSocket, refused: _Refused) -> None:
        # One line per refused handshake (no traceback: a refusal is the authorizer's answer, not a fault).
        client = websocket.scope.get("client")
        logger.info("handshake refused: %s from %s", refused.status, client[0] if client else "?")
        body = {"message": refused.message}
        try:
            await websocket.send_denial_response(JSONResponse(body, status_code=refused.status))
        except Exception:  # the client already left
            logger.debug("handshake refusal (%s) after the client left", refused.status)

    # -- handshake: authorizer and $connect ------------------------------------------------------

    @staticmethod
    def _headers(websocket: WebSocket) -> tuple[dict[str, str], dict[str, list[str]]]:
        headers: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for raw_name, raw_value in websocket.scope["headers"]:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            headers[name] = value
            multi.setdefault(name, []).append(value)
        client = websocket.scope.get("client")
        forwarded = {
            "X-Forwarded-For": client[0] if client else "127.0.0.1",
            "X-Forwarded-Port": str((websocket.scope.get("server") or ("", 0))[1]),
            "X-Forwarded-Proto": "https" if websocket.scope.get("scheme") == "wss" else "http",
        }
        for name, value in forwarded.items():
            if name.lower() not in {key.lower() for key in headers}:
                headers[name] = value
                multi[name] = [value]
        return headers, multi

    def _request_context(self, connection: _Connection, request_id: str, route_key: str) -> dict[str, Any]:
        now = time.time()
        event_type = {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route_key, "MESSAGE")
        context: dict[str, Any] = {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": connection.connected_at_ms,
            "requestTimeEpoch": int(now * 1000),
            "identity": {"sourceIp": connection.source_ip, "userAgent": connection.user_agent},
            "requestId": request_id,
            "domainName": connection.domain_name,
            "connectionId": connection.id,
            "apiId": self.api_id,
        }
        if connection.authorizer is not None:  # set once the authorizer allowed the handshake
            context["authorizer"] = connection.authorizer
        return context

    async def _authorize(self, connection: _Connection, handshake: _Handshake) -> dict[str, Any] | None:
        if self.authorizer is None:
            return None
        event = {
            "type": "REQUEST",
            "methodArn": self.method_arn,
            "headers": handshake.headers,
            "multiValueHeaders": handshake.multi_headers,
            "queryStringParameters": dict(handshake.query),
            "multiValueQueryStringParameters": _multi(handshake.query),
            "stageVariables": {},
            "requestContext": self._request_context(connection, handshake.request_id, "$connect"),
        }
        started = time.monotonic()
        try:
            response = await self._invoke(self.authorizer, event)
        except Exception as error:
            if str(error) == "Unauthorized":
                raise _Refused(401, "Unauthorized") from None
            logger.exception("authorizer failed")
            raise _Refused(500, None) from None
        latency_ms = int((time.monotonic() - started) * 1000)
        return self._evaluate_policy(response, latency_ms)

    def _evaluate_policy(self, response: Any, latency_ms: int) -> dict[str, Any]:
        """The authorizer's verdict on `$connect`: its context, or a refusal (403 deny, 500 malformed)."""
        try:
            principal = response["principalId"]
            statements = response["policyDocument"]["Statement"]
            context = response.get("context") or {}
            if not isinstance(principal, str) or not isinstance(context, dict):
                raise TypeError("principalId must be a string and context an object")
            if any(not isinstance(value, str | int | float | bool) for value in context.values()):
                raise TypeError("context values must be strings, numbers or booleans")
            effects = [
                statement["Effect"]
                for statement in (statements if isinstance(statements, list) else [statements])
                if self._statement_matches(statement)
            ]
        except (KeyError, TypeError, AttributeError):
            logger.error("malformed authorizer response: %r", response)
            raise _Refused(500, None) from None
        if "Deny" in effects or "Allow" not in effects:
            raise _Refused(403, "Forbidden")
        return {**context, "principalId": principal, "integrationLatency": latency_ms}

    def _statement_matches(self, statement: dict[str, Any]) -> bool:
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        return any(fnmatch.fnmatchcase("execute-api:Invoke", action) for action in actions) and any(
            fnmatch.fnmatchcase(self.method_arn, resource) for resource in resources
        )

    async def _connect(self, connection: _Connection, handshake: _Handshake) -> str | None:
        """Run `$connect`; answers the subprotocol to accept, or raises `_Refused`."""
        handler = self.handlers.get("$connect")
        if handler is None:
            return None
        event: dict[str, Any] = {
            "headers": handshake.headers,
            "multiValueHeaders": handshake.multi_headers,
            "requestContext": self._request_context(connection, handshake.request_id, "$connect"),
            "isBase64Encoded": False,
        }
        if handshake.query:
            event["queryStringParameters"] = dict(handshake.query)
            event["multiValueQueryStringParameters"] = _multi(handshake.query)
        try:
            response = await self._invoke(handler, event)
        except Exception:
            logger.exception("$connect failed")
            raise _Refused(500, "Internal server error") from None
        status = response.get("statusCode", 200) if isinstance(response, dict) else 200
        if not isinstance(status, int) or not 200 <= status < 300:
            raise _Refused(status if isinstance(status, int) and 400 <= status < 600 else 500, None)
        response_headers = (response.get("headers") or {}) if isinstance(response, dict) else {}
        subprotocol = {k.lower(): v for k, v in response_headers.items()}.get("sec-websocket-protocol")
        return str(subprotocol) if subprotocol else None

    # -- messages and $disconnect ----------------------------------------------------------------

    def _select_route(self, text: str | None) -> str | None:
        """`$request.body.action`: the route whose key equals the action, else `$default` if any."""
        action: Any = None
        if text is not None:
            try:
                body = json.loads(text)
            except (ValueError, RecursionError):  # not JSON, or nested too deep to parse: $default
                body = None
            if isinstance(body, dict) and "action" in body:
                action = body["action"]
                action = action if isinstance(action, str) else json.dumps(action)
        if action is not None and action not in _PREDEFINED_ROUTES and action in self.handlers:
            return str(action)
        return "$default" if "$default" in self.handlers else None

    async def _route(self, connection: _Connection, text: str | None, data: bytes) -> None:
        request_id = _aws_id()
        route_key = self._select_route(text)
        if route_key is None:
            await self._send_status(connection, "Forbidden", request_id)
            return
        context = self._request_context(connection, request_id, route_key)
        context["messageId"] = _aws_id()
        event = {
            "requestContext": context,
            "body": text if text is not None else base64.b64encode(data).decode("ascii"),
            "isBase64Encoded": text is None,
        }
        try:
            async with self._route_gate:  # first come, first served (asyncio wakes waiters in order)
                await self._invoke(self.handlers[route_key], event)
        except Exception:
            logger.exception("route %s failed on connection %s", route_key, connection.id)
            await self._send_status(connection, "Internal server error", request_id)

    async def _send_status(self, connection: _Connection, message: str, request_id: str) -> None:
        frame = json.dumps({"message": message, "connectionId": connection.id, "requestId": request_id})
        await self._send(connection, frame)

    async def _disconnect(self, connection: _Connection, code: int, reason: str) -> None:
        handler = self.handlers.get("$disconnect")
        if handler is None:
            return
        # API Gateway repeats only a few of the handshake's headers on $disconnect.
        headers = {
            "Host": connection.domain_name,
            "x-api-key": "",
            "X-Forwarded-For": connection.source_ip,
            "x-restapi": "",
        }
        context = self._request_context(connection, _aws_id(), "$disconnect")
        context.update(disconnectStatusCode=code, disconnectReason=reason)
        event = {
            "headers": headers,
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "requestContext": context,
            "isBase64Encoded": False,
        }
        try:
            await self._invoke(handler, event)
        except Exception:
            logger.exception("$disconnect failed for %s", connection.id)

    # -- @connections ----------------------------------------------------------------------------

    async def _send(self, connection: _Connection, payload: str | bytes) -> bool:
        """One frame to the client in call order; False when the connection is gone."""
        key = "text" if isinstance(payload, str) else "bytes"
        # asyncio's own timeout: anyio's cancel scope cost about 7 % of the gateway's CPU under load,
        # one per frame (docs/benchmarks.md, "Hot path").
        async with asyncio.timeout(self.send_timeout_s):
            async with connection.send_lock:
                if connection.closed_by_server is not None:
                    return False
                try:
                    await connection.websocket.send({"type": "websocket.send", key: payload})
                except Exception:  # closed under us (Starlette state or uvicorn ClientDisconnected)
                    return False
        connection.touch()
        return True

    async def _post(self, connection_id: str, body: bytes) -> tuple[int, str, str | None]:
        """PostToConnection: the status, and the error type and message when it is not 200."""
        connection = self._connections.get(connection_id)
        if connection is None or connection.closed_by_server is not None:
            return 410, "GoneException", None
        if len(body) > self.max_message_bytes:
            return 413, "PayloadTooLargeException", "Message too long"
        if not body:
            return 400, "BadRequestException", "Invalid request body: Data must not be empty"
        try:
            payload: str | bytes = body.decode("utf-8")
        except UnicodeDecodeError:
            payload = body
        try:
            sent = await self._send(connection, payload)
        except TimeoutError:
            return 429, "LimitExceededException", "The client side buffer is full"
        return (200, "", None) if sent else (410, "GoneException", None)

    def posts_in_front_of(self, app: ASGIApp) -> ASGIApp:
        """`POST @connections/{id}` as a bare ASGI app, passing every other request to `app`.

        One post per delta per watcher makes this the gateway's busiest route; Starlette's routing,
        request and middleware layers cost about a seventh of the gateway's CPU under load
        (docs/benchmarks.md, "Hot path"). The answers are the route's own (`_post`)."""
        prefixes = ("/@connections/", f"/{self.stage}/@connections/")

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            path = scope.get("path", "")
            if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(prefixes):
                await app(scope, receive, send)
                return
            body = await body_of(receive)
            if body is None:
                return  # the caller went away
            status, error_type, text = await self._post(path.split("/@connections/", 1)[1], body)
            if status == 200:
                await send({"type": "http.response.start", "status": 200, "headers": _EMPTY})
                await send({"type": "http.response.body", "body": b""})
                return
            await _error(status, error_type, text)(scope, receive, send)

        return dispatch

    async def _manage(self, request: Request) -> Response:
        if request.method == "POST":
            connection_id = request.path_params["connection_id"]
            status, error_type, text = await self._post(connection_id, await request.body())
            return Response(status_code=200) if status == 200 else _error(status, error_type, text)
        connection = self._connections.get(request.path_params["connection_id"])
        if connection is None or connection.closed_by_server is not None:
            return _error(410, "GoneException", None)
        if request.method == "GET":
            return JSONResponse(
                {
                    "connectedAt": _iso(connection.connected_at_ms / 1000),
                    "identity": {"sourceIp": connection.source_ip, "userAgent": connection.user_agent or ""},
                    "lastActiveAt": _iso(connection.last_active_epoch),
                }
            )
        await self._close(connection, 1000, "Connection Closed Normally")
        return Response(status_code=204)


_EMPTY = [(b"content-length", b"0")]


def _multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        multi.setdefault(name, []).append(value)
    return multi


def _error(status: int, error_type: str, message: str | None) -> Response:
    """An error in the rest-json shape botocore maps to `client.exceptions.<error_type>`."""
    return JSONResponse({"message": message}, status_code=status, headers={"x-amzn-ErrorType": error_type})
