"""The HTTP API's Lambda REQUEST authorizer (payload format 2.0, simple responses).

It accepts what the REST app accepts, `Authorization: Bearer <JWT>`, `Authorization: Bearer <API key>`
or `x-api-key`, with the WebSocket authorizer's verification (the same JWT verifier and key service).
A JWT authorizer could not: API Gateway refuses a request without its one identity source before any
code runs. It is deployed with no identity source and no caching, since either header may be absent
and a cached answer would outlive a revoked key.

Contract: https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-lambda-authorizer.html
(`{"isAuthorized": bool, "context": {...}}`; the context reaches the integration as
`requestContext.authorizer.lambda`).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.adapters.auth import Identity
from lambdas.errors import Unauthorized
from lambdas.observability import logger, metrics
from lambdas.runtime import deps
from lambdas.services.credentials import identity_from_headers

DENY: dict[str, Any] = {"isAuthorized": False}


def context_of(identity: Identity) -> dict[str, str]:
    """The authorizer context: flat strings, the same names the WebSocket authorizer uses."""
    return {**identity.to_context(), "authType": identity.method}


def authorize(event: dict[str, Any]) -> dict[str, Any]:
    # Payload 2.0 lower-cases header names and joins repeated headers with commas.
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    identity = identity_from_headers(
        deps(), authorization=headers.get("authorization"), x_api_key=headers.get("x-api-key")
    )
    return {"isAuthorized": True, "context": context_of(identity)}


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return authorize(event)
    except Unauthorized as exc:
        metrics.add_metric(name="AuthRejected", unit="Count", value=1)
        logger.info("request refused", extra={"reason": exc.message, "route": event.get("routeKey")})
        return DENY
