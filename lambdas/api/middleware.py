"""What every REST request passes before a route runs (docs/security.md).

- The path and query may not hold control characters (PostgreSQL refuses NUL; others disguise ids).
- A request with a body is authenticated first: a caller without valid credentials gets 401 before
  one byte of the body is read. The identity is kept in the request state for `get_caller`.
- Bodies have a size limit per route (JSON 1 MB; document uploads their documented maximum), checked
  on `Content-Length` before reading and counted while reading (chunked uploads): 413 `TOO_LARGE`.
- JSON bodies are checked for nesting depth before they are parsed and for control characters in
  every string: 400 `BAD_REQUEST`.

Every refusal has the project's error shape, `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lambdas.adapters.auth import Identity
from lambdas.api.deps import get_caller, get_deps
from lambdas.errors import BadRequest, ChatError, TooLarge, error_document
from lambdas.rag.parsing import MAX_DOCUMENT_BYTES
from lambdas.runtime import Deps
from lambdas.validation import MAX_JSON_DEPTH, first_control, has_control, json_too_deep

JSON_BODY_LIMIT = 1024 * 1024
# Route -> most body bytes (the multipart envelope and form fields around the largest document).
BODY_LIMITS = {("POST", "/v1/documents"): MAX_DOCUMENT_BYTES + 64 * 1024}
CALLER_STATE = "chatstack.caller"
_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Authenticate = Callable[[Deps, str | None, str | None], Identity]


def error_body(exc: ChatError) -> bytes:
    return json.dumps(error_document(exc.code, exc.message)).encode()


async def send_error(send: Send, exc: ChatError) -> None:
    body = error_body(exc)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status in (413, 401):
        headers.append((b"connection", b"close"))  # the unread body is not worth draining
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RequestGuard:
    """Pure ASGI middleware (it must see the body stream before any route reads it)."""

    def __init__(self, app: ASGIApp, authenticate: Authenticate) -> None:
        self.app = app
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            receive = await self._check(scope, receive)
        except ChatError as exc:
            await send_error(send, exc)
            return
        await self.app(scope, receive, send)

    async def _check(self, scope: Scope, receive: Receive) -> Receive:
        path = scope.get("path", "")
        query = unquote(scope.get("query_string", b"").decode("latin-1"))
        if has_control(path) or has_control(query):
            raise BadRequest("The path or query holds a control character.")
        method = scope.get("method", "GET")
        if method not in _WITH_BODY or not path.startswith("/v1/"):
            return receive
        limit = BODY_LIMITS.get((method, path.rstrip("/")), JSON_BODY_LIMIT)
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise TooLarge(f"The request body is larger than {limit:,} bytes.")
        await self._authenticate(scope)
        kind = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        if kind == "application/json" or kind.endswith("+json"):
            body = await _read(receive, limit)
            _check_json(body)
            return _replay(body, receive)
        return _counting(receive, limit)

    async def _authenticate(self, scope: Scope) -> None:
        event = scope.get("aws.event")
        if isinstance(event, dict) and ((event.get("requestContext") or {}).get("authorizer") or {}):
            return  # API Gateway's authorizer has verified the caller (deps.get_caller reads it)
        if get_caller in getattr(scope.get("app"), "dependency_overrides", {}):
            return  # a test replaced authentication on purpose; the override runs as the route's dependency
        overrides = getattr(scope.get("app"), "dependency_overrides", {})
        provider = overrides.get(get_deps, get_deps)  # the same Deps the routes get

        def check() -> Identity:
            authorization, api_key = _header(scope, b"authorization"), _header(scope, b"x-api-key")
            return self.authenticate(provider(), authorization, api_key)

        identity = await run_in_threadpool(check)
        scope.setdefault("state", {})[CALLER_STATE] = identity


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"The request body is larger than {limit:,} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _check_json(body: bytes) -> None:
    if json_too_deep(body):
        raise BadRequest(f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels.")
    try:
        value: Any = json.loads(body)
    except ValueError:
        return  # the route answers invalid JSON with its own 400
    where = first_control(value)
    if where:
        raise BadRequest(f"{where}: control characters such as NUL are not allowed.")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _counting(receive: Receive, limit: int) -> Receive:
    """Pass the body through, refusing (TooLarge, mapped to 413 by the app) once it exceeds `limit`."""
    size = 0

    async def counted() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise TooLarge(f"The request body is larger than {limit:,} bytes.")
        return message

    return counted
