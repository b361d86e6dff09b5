"""The job queue sends SendMessage itself first, and hands anything unusual to boto3
(lambdas/adapters/queue.py).

Contracts checked:
- the request is the one boto3's `sqs.send_message` sends (AWS JSON 1.0 protocol, "Making query API
  requests using AWS JSON protocol in Amazon SQS", SQS Developer Guide): same URL, body and Signature
  Version 4 headers (Content-Type, X-Amz-Target, x-amzn-query-mode signed with Host and X-Amz-Date, the
  session token when there is one), compared with the request boto3 builds under the same clock and
  credentials, for the regional endpoint boto3 resolves itself and for local ones;
- against the local SQS stand-in (real uvicorn, behind the run's SigV4 guard), a job arrives once with
  the body, group and deduplication id boto3 would have sent, and boto3's client is not called;
- an answer other than 200 (a refused signature here) is handed to boto3, which raises SQS's error;
- under Lambda's active tracing (`_X_AMZN_TRACE_ID` set), the job carries the trace header as the
  `AWSTraceHeader` message system attribute, which SQS hands to the consuming function's event record
  ("Amazon SQS and AWS X-Ray", X-Ray Developer Guide; SendMessage's MessageSystemAttributes).
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.auth
import pytest
from botocore.awsrequest import AWSResponse
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from starlette.applications import Starlette
from starlette.routing import Mount

from chatstack.local.internal_auth import RunCredentials, guarded
from chatstack.local.sqs import LocalSqs
from lambdas.adapters.queue import JobQueue
from lambdas.wiring import Queue

FIXED = datetime.datetime(2026, 11, 29, 8, 0, 0)
QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo"
JOB = {"requestId": "r-1", "text": "caf\u00e9 \u2603", "options": {"maxTokens": 64}}


class _Raw:
    def stream(self) -> Any:
        return iter([b""])


TRACE = "Root=1-6745a1b2-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1"
SYSTEM_ATTRIBUTES = {"AWSTraceHeader": {"DataType": "String", "StringValue": TRACE}}


def boto3_request(endpoint: str | None, token: str | None, **extra: Any) -> Any:
    """The request boto3 would send (captured before it leaves; nothing goes on the network)."""
    client = boto3.client(
        "sqs", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI", aws_session_token=token,
    )
    seen: list[Any] = []

    def capture(request: Any, **_: Any) -> AWSResponse:
        seen.append(request)
        return AWSResponse(request.url, 200, {}, _Raw())

    client.meta.events.register("before-send", capture)
    client.send_message(
        QueueUrl=QUEUE_URL, MessageBody=json.dumps(JOB, separators=(",", ":")),
        MessageGroupId="conversation-1", MessageDeduplicationId="r-1", **extra,
    )
    return seen[0]


@pytest.mark.parametrize("traced", [False, True])
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//session+token="])
@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:8021/sqs", "https://sqs.example.com:8443"])
def test_the_signed_send_is_the_request_boto3_sends(
    monkeypatch: pytest.MonkeyPatch, endpoint: str | None, token: str | None, traced: bool
) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: FIXED)
    extra: dict[str, Any] = {"MessageSystemAttributes": SYSTEM_ATTRIBUTES} if traced else {}
    expected = boto3_request(endpoint, token, **extra)
    queue = JobQueue(QUEUE_URL, region="eu-west-1", endpoint_url=endpoint or "",
                     credentials=Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI", token))
    params = {
        "QueueUrl": QUEUE_URL, "MessageBody": json.dumps(JOB, separators=(",", ":")),
        "MessageGroupId": "conversation-1", "MessageDeduplicationId": "r-1", **extra,
    }
    path, body, headers = queue.signed_send(params, now=FIXED)
    url = urlsplit(expected.url)
    assert (url.path, url.query) == (path, "")
    assert url.netloc == urlsplit(queue.client.meta.endpoint_url).netloc
    assert expected.body == body
    signed = {"Authorization", "X-Amz-Date", "X-Amz-Target", "Content-Type", "x-amzn-query-mode"}
    signed |= {"X-Amz-Security-Token"} if token else set()
    assert set(headers) == signed
    for name in signed:
        assert headers[name] == expected.headers[name].decode(), name


@pytest.fixture
async def local_sqs(serve_routes: Any) -> Any:
    run = RunCredentials.generate()
    received: list[dict[str, Any]] = []
    queue = Queue(name="jobs.fifo", dead_letter_name="jobs-dlq.fifo", max_receive_count=3,
                  visibility_timeout_s=60, batch_size=10, max_concurrency=2)
    holder: list[LocalSqs] = []

    def build(base_url: str) -> list[Any]:
        holder.append(LocalSqs(queue=queue, worker=lambda event, _: received.append(event),
                               base_url=f"{base_url}/sqs"))
        return [Mount("/", app=guarded(Starlette(routes=holder[0].routes), run))]

    await serve_routes(build)
    sqs = holder[0]
    await sqs.start()
    yield sqs, run, received
    await sqs.stop()


def adapter(
    monkeypatch: pytest.MonkeyPatch, sqs: LocalSqs, run: RunCredentials, secret: str | None = None
) -> tuple[JobQueue, list[str]]:
    """The queue as a Lambda host builds it (credentials from its environment), and the operations
    its boto3 client was asked for."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", run.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret or run.secret_access_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    queue = JobQueue(sqs.queue_url, region="us-east-1", endpoint_url=sqs.endpoint_url)
    calls: list[str] = []
    queue.client.meta.events.register("before-call.sqs", lambda model, **_: calls.append(model.name))
    return queue, calls


async def test_a_job_arrives_once_without_boto3(local_sqs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sqs, run, received = local_sqs
    queue, calls = adapter(monkeypatch, sqs, run)
    first = await asyncio.to_thread(queue.enqueue, JOB, group_id="conversation-1", deduplication_id="r-1")
    again = await asyncio.to_thread(queue.enqueue, JOB, group_id="conversation-1", deduplication_id="r-1")
    assert first == again  # SQS FIFO deduplication: the same message, sent once
    await sqs.wait_idle()
    (record,) = [r for event in received for r in event["Records"]]
    assert json.loads(record["body"]) == JOB
    assert record["attributes"]["MessageGroupId"] == "conversation-1"
    assert record["attributes"]["MessageDeduplicationId"] == "r-1"
    assert record["messageId"] == first
    assert calls == []


async def test_a_refused_send_is_handed_to_boto3_and_raises_its_error(
    local_sqs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs, run, received = local_sqs
    queue, calls = adapter(monkeypatch, sqs, run, secret="not-the-secret")
    with pytest.raises(ClientError):
        await asyncio.to_thread(queue.enqueue, JOB, group_id="conversation-1", deduplication_id="r-2")
    assert calls == ["SendMessage"]
    await sqs.wait_idle()
    assert received == []


@pytest.mark.parametrize("trace", [TRACE, ""])
async def test_under_active_tracing_the_job_carries_the_senders_trace_to_the_worker(
    local_sqs: Any, monkeypatch: pytest.MonkeyPatch, trace: str
) -> None:
    """Lambda puts the invocation's trace header in `_X_AMZN_TRACE_ID`; SQS hands an AWSTraceHeader
    system attribute to the consumer's event record, where Lambda continues the trace from it."""
    sqs, run, received = local_sqs
    queue, calls = adapter(monkeypatch, sqs, run)
    if trace:
        monkeypatch.setenv("_X_AMZN_TRACE_ID", trace)
    else:
        monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    await asyncio.to_thread(queue.enqueue, JOB, group_id="conversation-1", deduplication_id="r-3")
    await sqs.wait_idle()
    (record,) = [r for event in received for r in event["Records"]]
    assert record["attributes"].get("AWSTraceHeader") == (trace or None)
    assert calls == []  # sent directly, not handed to boto3 (which a refused attribute would cause)
