"""The sweeper: enqueues again every accepted request whose generation died (lambdas/services/recovery.py).

Run on a schedule (EventBridge in the cloud, the local runtime's timer) and once when the local runtime
starts. `{"minAgeS": 0}` sweeps every unanswered request at once (after a restart nothing is running).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.observability import logger, metrics
from lambdas.runtime import deps
from lambdas.services.recovery import RecoveryService


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    min_age = event.get("minAgeS") if isinstance(event, dict) else None
    requeued = RecoveryService(deps()).sweep(min_age_s=float(min_age) if min_age is not None else None)
    if requeued:
        logger.info("sweep enqueued orphaned requests again", extra={"requeued": requeued})
    return {"requeued": requeued}
