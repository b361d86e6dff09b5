"""API Gateway's HTTP API in front of the REST app, as the templates configure it (`--as-deployed`).

For each request: the route (most specific first; none -> 404), then the route's authorizer, then the
app, with the event API Gateway would hand the integration in the ASGI scope (`aws.event`, where
Mangum puts it), so the app sees `requestContext.authorizer` exactly as in Lambda.

Authorizers, per the API Gateway developer guide ("Controlling access to HTTP APIs with JWT
authorizers", "Working with AWS Lambda authorizers for HTTP APIs"):
- JWT: the identity source must be present (else 401 before anything runs); the token's signature
  is checked against the issuer's keys, `iss` must equal the issuer, `aud` or `client_id` must be
  one of the audiences, `exp`/`nbf` must hold; only RSA keys are accepted. Else 401.
- Lambda REQUEST: every configured identity source must be present (else 401); the function gets the
  payload 2.0 event; a simple response `isAuthorized: false` (or a Deny policy) is 403, an
  "Unauthorized" error 401, any other failure 500; its context reaches the app.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import anyio
import jwt
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from chatstack.local.as_deployed import Authorizer, Deployment, HttpRoute

Invoke = Callable[[str, dict[str, Any]], Any]  # (function name, event) -> result; raises on a function error
KeySource = Callable[[str], Any]  # (kid) -> a public key of the configured issuer


def _message(status: int, text: str) -> JSONResponse:
    return JSONResponse({"message": text}, status_code=status)


def identity_value(source: str, headers: Headers, query: dict[str, str]) -> str | None:
    """`$request.header.NAME` / `$request.querystring.NAME`, as API Gateway reads identity sources."""
    if source.startswith("$request.header."):
        return headers.get(source[len("$request.header.") :])
    if source.startswith("$request.querystring."):
        return query.get(source[len("$request.querystring.") :])
    return None


def payload_v2(scope: Scope, route: HttpRoute, headers: Headers, sources: list[str]) -> dict[str, Any]:
    method, path = scope["method"], scope["path"]
    raw_query = scope.get("query_string", b"").decode("latin-1")
    joined: dict[str, str] = {}
    for name, value in headers.items():  # payload 2.0 joins repeated headers with commas
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    client = scope.get("client") or ("127.0.0.1", 0)
    route_key = f"{route.method} {route.path}"
    return {
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": f"arn:aws:execute-api:local:000000000000:local/$default/{method}{path}",
        "identitySource": sources,
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "cookies": [c.strip() for c in headers.get("cookie", "").split(";") if c.strip()],
        "headers": joined,
        "queryStringParameters": query,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": headers.get("host", "localhost"),
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": client[0],
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route_key,
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
        },
        "pathParameters": {},
        "stageVariables": {},
    }


class HttpApiGate:
    def __init__(self, app: ASGIApp, deployment: Deployment, invoke: Invoke, keys: KeySource) -> None:
        self.app = app
        self.deployment = deployment
        self.invoke = invoke
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.deployment.http_route(scope["method"], scope["path"])
        if route is None:
            await _message(404, "Not Found")(scope, receive, send)
            return
        headers = Headers(scope=scope)
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        auth = route.authorizer
        sources = [identity_value(s, headers, query) for s in (auth.identity_sources if auth else ())]
        if auth is not None and any(not v for v in sources):
            await _message(401, "Unauthorized")(scope, receive, send)
            return
        event = payload_v2(scope, route, headers, [v for v in sources if v])
        event.pop("type"), event.pop("routeArn"), event.pop("identitySource")
        if auth is not None:
            try:
                if auth.kind == "JWT":
                    context = {"jwt": self._jwt(auth, str(sources[0]))}
                else:
                    context = {"lambda": await self._lambda(auth, scope, route, headers, sources)}
            except _Refused as refused:
                await _message(refused.status, refused.text)(scope, receive, send)
                return
            event["requestContext"]["authorizer"] = context
        await self.app({**scope, "aws.event": event}, receive, send)

    def _jwt(self, auth: Authorizer, raw: str) -> dict[str, Any]:
        token = raw[7:].strip() if raw.lower().startswith("bearer ") else raw.strip()
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            claims: dict[str, Any] = jwt.decode(
                token, key=self.keys(str(kid)), algorithms=["RS256", "RS384", "RS512"], issuer=auth.issuer,
                options={"verify_aud": False, "require": ["exp", "iss"]},
            )  # fmt: skip
        except Exception:
            raise _Refused(401, "Unauthorized") from None
        audiences = claims.get("aud") or claims.get("client_id")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        if not set(map(str, audiences)) & set(auth.audiences):
            raise _Refused(401, "Unauthorized")
        scopes = str(claims.get("scope", "")).split()
        return {"claims": {k: v if isinstance(v, str) else json.dumps(v) for k, v in claims.items()},
                "scopes": scopes or None}  # fmt: skip

    async def _lambda(
        self, auth: Authorizer, scope: Scope, route: HttpRoute, headers: Headers, sources: list[str | None]
    ) -> dict[str, Any]:
        if auth.payload_version != "2.0":
            raise _Refused(500, "Internal Server Error")  # this emulation builds payload 2.0 only
        event = payload_v2(scope, route, headers, [v for v in sources if v])
        try:
            result = await anyio.to_thread.run_sync(self.invoke, auth.function, event)
        except Exception as exc:
            if str(exc) == "Unauthorized":
                raise _Refused(401, "Unauthorized") from None
            raise _Refused(500, "Internal Server Error") from None
        if not isinstance(result, dict):
            raise _Refused(500, "Internal Server Error")
        if auth.simple_responses:
            allowed = result.get("isAuthorized") is True
        else:
            statements = (result.get("policyDocument") or {}).get("Statement") or []
            allowed = bool(statements) and all(s.get("Effect") == "Allow" for s in statements)
        if not allowed:
            raise _Refused(403, "Forbidden")
        context = result.get("context") or {}
        return dict(context) if isinstance(context, dict) else {}


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
