"""The queue worker: one invocation takes a batch of SQS FIFO jobs and runs them concurrently.

A Lambda bills wall-clock time while it waits on the GPU; one invocation streaming up to ten answers
costs about a tenth of one per answer. Jobs of one message group (a conversation) run in order; after
a failure the rest of that group is reported failed too, as SQS FIFO requires.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import SqsModel, SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas import wiring
from lambdas.observability import logger, metrics
from lambdas.runtime import deps
from lambdas.services.generation import GenerationService, Job

# A job is not started with less of the invocation's time left than this: one answer waits up to the
# model's first-byte timeout (70 s by default) and then streams up to its token cap. What is not started
# is reported failed and comes back in a new invocation, instead of being cut by the function's timeout
# (which kills every job of the invocation, and locally the whole Lambda host).
JOB_START_MARGIN_S = 180


def _run_group(
    service: GenerationService, records: list[SqsRecordModel], remaining_ms: Callable[[], int]
) -> list[str]:
    """Run one group's jobs in order; returns the message ids to redeliver."""
    for index, record in enumerate(records):
        if index and remaining_ms() < JOB_START_MARGIN_S * 1000:
            logger.warning(
                "the invocation's time is nearly spent: the rest of the group is redelivered",
                extra={"message_id": record.messageId, "not_started": len(records) - index},
            )
            return [r.messageId for r in records[index:]]
        try:
            job = Job.parse(json.loads(str(record.body)))
        except (ValueError, KeyError, TypeError):
            logger.error("unparseable job", extra={"message_id": record.messageId})
            return [r.messageId for r in records[index:]]
        try:
            service.run(job)
        except Exception:
            receives = int(record.attributes.ApproximateReceiveCount or 1)
            if receives >= wiring.JOBS_QUEUE.max_receive_count:
                # The last delivery: the job goes to the dead-letter queue. The client must not wait on
                # a silent stream; it gets an error frame it can act on.
                logger.exception("job failed for the last time", extra={"request_id": job.request_id})
                service.give_up(job)
            else:
                logger.exception("job failed; it will be redelivered", extra={"request_id": job.request_id})
            return [r.messageId for r in records[index:]]
    return []


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    batch = parse(event=event, model=SqsModel)
    groups: dict[str, list[SqsRecordModel]] = defaultdict(list)
    for record in batch.Records:
        groups[record.attributes.MessageGroupId or record.messageId].append(record)
    service = GenerationService(deps())
    remaining = context.get_remaining_time_in_millis
    if len(groups) <= 1:  # the usual batch here: one conversation, run on the invocation's own thread
        results = [_run_group(service, records, remaining) for records in groups.values()]
    else:
        with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="job") as pool:
            results = list(pool.map(lambda records: _run_group(service, records, remaining), groups.values()))
    failures = [message_id for failed in results for message_id in failed]
    metrics.add_metric(name="JobsFailed", unit="Count", value=len(failures))
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}
