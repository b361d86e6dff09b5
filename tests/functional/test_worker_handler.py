"""The worker Lambda handler on an SQS event (the documented shape, from tests/fixtures/events), with
real PostgreSQL and Redis: partial batch failures, and a job on its last delivery ending in an error
frame instead of a silent stream."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatstack.local.lambda_context import LocalLambdaContext
from lambdas import protocol, wiring
from lambdas.config import Settings
from lambdas.handlers import worker
from lambdas.runtime import Deps, set_deps

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "events" / "sqs_fifo_batch.json"


@pytest.fixture
def deps(pg_url: str, redis_url: str) -> Iterator[Deps]:
    d = Deps(Settings(environment="test", database_url=pg_url, redis_url=redis_url,
                      connections_url="http://127.0.0.1:9", queue_url="http://127.0.0.1:9/q",
                      model_endpoint="http://127.0.0.1:9/invocations"))
    set_deps(d)
    yield d
    set_deps(None)


def sqs_event(job: dict[str, Any], receive_count: int) -> dict[str, Any]:
    event = json.loads(FIXTURE.read_text())
    record = copy.deepcopy(event["Records"][0])
    record["body"] = json.dumps(job)
    record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    record["attributes"]["MessageGroupId"] = job["conversationId"]
    return {"Records": [record]}


def uncommitted_job() -> dict[str, Any]:
    """A job whose user message was never committed (its sendMessage transaction rolled back)."""
    return {"requestId": str(uuid.uuid4()), "conversationId": str(uuid.uuid4()),
            "messageId": str(uuid.uuid4()), "answerId": str(uuid.uuid4()), "tenantId": "t", "userId": "u",
            "connectionId": "gone=", "text": "hi", "options": {}, "enqueuedAt": time.time()}


def test_a_failing_job_is_reported_for_redelivery_without_telling_the_client_yet(deps: Deps) -> None:
    job = uncommitted_job()
    event = sqs_event(job, receive_count=1)
    result = worker.handler(event, LocalLambdaContext(wiring.WORKER))
    assert result == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert deps.cache.replay(job["requestId"]) is None


def test_the_last_delivery_of_a_failing_job_ends_the_stream_with_an_error_frame(deps: Deps) -> None:
    job = uncommitted_job()
    event = sqs_event(job, receive_count=wiring.JOBS_QUEUE.max_receive_count)
    result = worker.handler(event, LocalLambdaContext(wiring.WORKER))
    assert len(result["batchItemFailures"]) == 1  # it still goes to the dead-letter queue
    frames = [protocol.parse_server_frame(f) for f in deps.cache.replay(job["requestId"]) or []]
    assert [(type(f).__name__, getattr(f, "code", None)) for f in frames] == [("Error", "INTERNAL")]


def test_an_unparseable_job_is_reported_failed(deps: Deps) -> None:
    event = sqs_event(uncommitted_job(), receive_count=1)
    event["Records"][0]["body"] = "not json"
    result = worker.handler(event, LocalLambdaContext(wiring.WORKER))
    assert result["batchItemFailures"] == [{"itemIdentifier": event["Records"][0]["messageId"]}]


def test_a_batch_of_two_conversations_runs_both_and_reports_each_failure(deps: Deps) -> None:
    first, second = sqs_event(uncommitted_job(), 1), sqs_event(uncommitted_job(), 1)
    second["Records"][0]["messageId"] = str(uuid.uuid4())
    event = {"Records": first["Records"] + second["Records"]}
    result = worker.handler(event, LocalLambdaContext(wiring.WORKER))
    failed = sorted(item["itemIdentifier"] for item in result["batchItemFailures"])
    assert failed == sorted(record["messageId"] for record in event["Records"])


def test_a_job_is_not_started_when_the_invocation_s_time_is_nearly_spent(deps: Deps) -> None:
    """Jobs of one conversation run in order; one that would start with less than the margin left is
    reported failed (it comes back in a new invocation) rather than cut by the function's timeout,
    which ends every job of the invocation. Old jobs whose message was never committed are dropped
    without error, so a job that runs is not reported."""
    def old_job(conversation: str) -> dict[str, Any]:
        return {**uncommitted_job(), "conversationId": conversation, "enqueuedAt": time.time() - 3600}

    def batch() -> dict[str, Any]:
        conversation = str(uuid.uuid4())
        first, second = sqs_event(old_job(conversation), 1), sqs_event(old_job(conversation), 1)
        second["Records"][0]["messageId"] = str(uuid.uuid4())
        return {"Records": first["Records"] + second["Records"]}

    assert worker.handler(batch(), LocalLambdaContext(wiring.WORKER)) == {"batchItemFailures": []}
    late = batch()
    nearly_spent = LocalLambdaContext(wiring.WORKER, timeout_s=worker.JOB_START_MARGIN_S - 1)
    result = worker.handler(late, nearly_spent)
    assert result == {"batchItemFailures": [{"itemIdentifier": late["Records"][1]["messageId"]}]}
