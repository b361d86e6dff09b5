"""The shape every WebSocket route handler shares: parse the API Gateway event (Powertools model), take
the identity from the authorizer context, run one service call, and turn every failure into exactly
one protocol `error` frame on the caller's connection."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import APIGatewayWebSocketMessageEventModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas import protocol
from lambdas.adapters.auth import Identity
from lambdas.adapters.failures import dependency_down
from lambdas.errors import BadRequest, ChatError, Internal, Unauthorized, Unavailable
from lambdas.observability import logger, metrics
from lambdas.runtime import Deps, deps

OK = {"statusCode": 200}


@dataclass(frozen=True, slots=True)
class WsRequest:
    connection_id: str
    identity: Identity
    body: str
    deps: Deps


RouteFn = Callable[[WsRequest], protocol.ServerFrame | None]


def still_valid(identity: Identity, d: Deps) -> None:
    """A connection is authorized once, at $connect, and may last two hours: each frame checks that
    its credential has not expired since (the token's `exp`, an API key's expiry) nor been revoked
    (an API key; a revocation marks it in Redis). Refused: UNAUTHORIZED; reconnect with a fresh one."""
    if identity.expires_at and time.time() > identity.expires_at + d.settings.auth_leeway_s:
        raise Unauthorized("The credential this connection was opened with has expired; reconnect.")
    if identity.method == "api_key" and identity.key_id and d.cache.key_revoked(identity.key_id):
        raise Unauthorized("The API key this connection was opened with was revoked.")


def ws_route(fn: RouteFn) -> Callable[[dict[str, Any], LambdaContext], dict[str, int]]:
    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    @functools.wraps(fn)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
        ev = parse(event=event, model=APIGatewayWebSocketMessageEventModel)
        connection_id = ev.request_context.connection_id
        body = ev.body if isinstance(ev.body, str) else ""
        d = deps()
        logger.append_keys(connection_id=connection_id, route=ev.request_context.route_key)
        try:
            identity = Identity.from_context(event["requestContext"].get("authorizer"))
            logger.append_keys(tenant_id=identity.tenant_id)
            still_valid(identity, d)
            if event.get("isBase64Encoded"):  # a binary frame (API Gateway routes it to $default)
                raise BadRequest("Binary frames are not accepted; send the JSON frame as text.")
            reply = fn(WsRequest(connection_id, identity, body, d))
        except ChatError as exc:
            metrics.add_metric(name=f"Error{exc.code}", unit="Count", value=1)
            reply = protocol.error_frame(exc, protocol.peek_request_id(body))
        except Exception as exc:
            metrics.add_metric(name="ErrorINTERNAL", unit="Count", value=1)
            if dependency_down(exc):  # PostgreSQL or Redis is down: the client retries shortly
                logger.warning("route failed: a dependency is unavailable", extra={"error": str(exc)})
                error: ChatError = Unavailable(d.settings.dependency_retry_after_s)
            else:
                logger.exception("route failed")
                error = Internal("Something went wrong on our side; please retry.")
            reply = protocol.error_frame(error, protocol.peek_request_id(body))
        if reply is not None:
            d.connections.post(connection_id, protocol.dump(reply))
        return OK

    return handler
