"""$connect: record the connection in the Redis registry (TTL = API Gateway's 2-hour maximum)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import APIGatewayWebSocketConnectEventModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas import wiring
from lambdas.adapters.auth import Identity
from lambdas.errors import ChatError
from lambdas.observability import logger, metrics
from lambdas.runtime import deps


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ev = parse(event=event, model=APIGatewayWebSocketConnectEventModel)
    try:
        identity = Identity.from_context(event["requestContext"].get("authorizer"))
    except ChatError as exc:
        return {"statusCode": exc.status, "body": exc.message}
    deps().cache.register_connection(
        ev.request_context.connection_id,
        tenant_id=identity.tenant_id,
        user_id=identity.user_id,
        ttl_s=wiring.MAX_CONNECTION_S + 60,
    )
    metrics.add_metric(name="Connections", unit="Count", value=1)
    return {"statusCode": 200}
