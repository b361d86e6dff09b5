"""$disconnect: drop the connection from the registry. Delivery is best effort, hence the TTL there."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.observability import logger, metrics
from lambdas.runtime import deps


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps().cache.drop_connection(str(event["requestContext"]["connectionId"]))
    metrics.add_metric(name="Disconnections", unit="Count", value=1)
    return {"statusCode": 200}
