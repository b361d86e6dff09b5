"""The local SQS FIFO stand-in honours SQS's documented contract and Lambda's SQS event source mapping.

Contract checked (SQS API reference for SendMessage, SendMessageBatch, GetQueueUrl, GetQueueAttributes
over the AWS JSON 1.0 protocol; SQS FIFO delivery logic; Lambda "Using Lambda with Amazon SQS" with
ReportBatchItemFailures): boto3 works unchanged against it and gets SQS's errors as SQS's exceptions,
deduplication holds for five minutes, a message group is delivered in order with at most one batch
in flight, records have the documented event shape, failed items (only those, and what follows them
in their group) are redelivered with a growing receive count, and a message received
`max_receive_count` times moves to the dead-letter queue. Real uvicorn server, real boto3 client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parser.models import SqsModel
from botocore.exceptions import ClientError

from chatstack.local.lambda_context import LocalLambdaContext
from chatstack.local.sqs import LocalSqs
from lambdas.wiring import Queue

FIXTURE = Path(__file__).parent.parent / "fixtures" / "events" / "sqs_fifo_batch.json"
CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "local", "aws_secret_access_key": "local"}
QUEUE = Queue(
    name="jobs-test.fifo",
    dead_letter_name="jobs-test-dlq.fifo",
    max_receive_count=3,
    visibility_timeout_s=60,
    batch_size=10,
    max_concurrency=4,
)


class Batches:
    """Every event the worker received, recorded from its threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []

    def add(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)

    @property
    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            return [record for event in self.events for record in event["Records"]]

    def bodies(self) -> list[list[str]]:
        with self.lock:
            return [[record["body"] for record in event["Records"]] for event in self.events]


Worker = Callable[[dict[str, Any], LocalLambdaContext], Any]


class Harness:
    def __init__(self, sqs: LocalSqs, client: Any) -> None:
        self.sqs = sqs
        self.client = client

    async def call(self, method: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.client, method), **kwargs)

    async def send(self, body: str, group: str, dedup: str | None = None, **kwargs: Any) -> Any:
        return await self.call(
            "send_message",
            QueueUrl=self.sqs.queue_url,
            MessageBody=body,
            MessageGroupId=group,
            MessageDeduplicationId=dedup or body,
            **kwargs,
        )

    async def attributes(self, url: str) -> dict[str, str]:
        response = await self.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
        return dict(response["Attributes"])


MakeSqs = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_sqs(serve_routes: Any) -> AsyncIterator[MakeSqs]:
    queues: list[LocalSqs] = []

    async def make(worker: Worker, *, start: bool = True, queue: Queue = QUEUE, **options: Any) -> Harness:
        holder: list[LocalSqs] = []

        def build(base_url: str) -> list[Any]:
            # A path under the server, as `chatstack up` mounts it: botocore posts to the endpoint URL.
            holder.append(LocalSqs(queue=queue, worker=worker, base_url=f"{base_url}/sqs", **options))
            return holder[0].routes

        await serve_routes(build)
        sqs = holder[0]
        queues.append(sqs)
        if start:
            await sqs.start()
        client = await asyncio.to_thread(boto3.client, "sqs", endpoint_url=sqs.endpoint_url, **CREDENTIALS)
        return Harness(sqs, client)

    yield make
    for sqs in queues:
        await sqs.stop()


def recording_worker(
    batches: Batches, fail: Callable[[dict[str, Any]], bool] = lambda record: False
) -> Worker:
    """A worker reporting the records `fail` picks as batch item failures."""

    def worker(event: dict[str, Any], context: LocalLambdaContext) -> dict[str, Any]:
        batches.add(event)
        failures = [{"itemIdentifier": r["messageId"]} for r in event["Records"] if fail(r)]
        return {"batchItemFailures": failures}

    return worker


# -- the wire protocol -----------------------------------------------------------------------------


async def test_given_boto3_when_sending_then_the_queue_url_and_attributes_round_trip(
    make_sqs: MakeSqs,
) -> None:
    h = await make_sqs(recording_worker(Batches()), start=False)
    assert (await h.call("get_queue_url", QueueName=QUEUE.name))["QueueUrl"] == h.sqs.queue_url
    dlq_url = (await h.call("get_queue_url", QueueName=QUEUE.dead_letter_name))["QueueUrl"]
    assert dlq_url == h.sqs.dead_letter_queue_url

    sent = await h.send("hello", "g1")
    assert sent["MD5OfMessageBody"] == hashlib.md5(b"hello").hexdigest()
    assert sent["SequenceNumber"].isdigit()

    attributes = await h.attributes(h.sqs.queue_url)
    assert attributes["ApproximateNumberOfMessages"] == "1"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert attributes["FifoQueue"] == "true"
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": f"arn:aws:sqs:us-east-1:000000000000:{QUEUE.dead_letter_name}",
        "maxReceiveCount": 3,
    }
    some = await h.call(
        "get_queue_attributes", QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert some["Attributes"] == {"ApproximateNumberOfMessages": "0"}


async def test_given_a_queue_url_with_another_host_name_when_sending_then_the_path_names_the_queue(
    make_sqs: MakeSqs,
) -> None:
    h = await make_sqs(recording_worker(Batches()), start=False)
    other_host = h.sqs.queue_url.replace("127.0.0.1", "localhost")
    await h.call(
        "send_message", QueueUrl=other_host, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="1"
    )
    assert (await h.attributes(h.sqs.queue_url))["ApproximateNumberOfMessages"] == "1"


async def test_invalid_requests_get_sqs_errors_that_boto3_maps_to_its_exceptions(make_sqs: MakeSqs) -> None:
    h = await make_sqs(recording_worker(Batches()), start=False)
    url = h.sqs.queue_url

    async def code_of(method: str, **kwargs: Any) -> str:
        with pytest.raises(ClientError) as raised:
            await h.call(method, **kwargs)
        return str(raised.value.response["Error"]["Code"])

    assert await code_of("send_message", QueueUrl=url, MessageBody="x", MessageDeduplicationId="d") == (
        "MissingParameter"
    )
    assert await code_of("send_message", QueueUrl=url, MessageBody="x", MessageGroupId="g") == (
        "InvalidParameterValue"  # no deduplication id and no content-based deduplication
    )
    too_big = "x" * (256 * 1024 + 1)
    assert await code_of(
        "send_message", QueueUrl=url, MessageBody=too_big, MessageGroupId="g", MessageDeduplicationId="d"
    ) == ("InvalidParameterValue")
    assert await code_of(
        "send_message", QueueUrl=url, MessageBody="\x00", MessageGroupId="g", MessageDeduplicationId="d"
    ) == ("InvalidMessageContents")
    with pytest.raises(h.client.exceptions.QueueDoesNotExist):
        await h.call("send_message", QueueUrl=url.replace(QUEUE.name, "nope.fifo"), MessageBody="x")
    with pytest.raises(h.client.exceptions.QueueDoesNotExist):
        await h.call("get_queue_url", QueueName="nope.fifo")
    with pytest.raises(h.client.exceptions.InvalidAttributeName):
        await h.call("get_queue_attributes", QueueUrl=url, AttributeNames=["NoSuchAttribute"])
    entries = [{"Id": str(i), "MessageBody": "x", "MessageGroupId": "g"} for i in range(11)]
    with pytest.raises(h.client.exceptions.TooManyEntriesInBatchRequest):
        await h.call("send_message_batch", QueueUrl=url, Entries=entries)
    with pytest.raises(h.client.exceptions.BatchEntryIdsNotDistinct):
        await h.call("send_message_batch", QueueUrl=url, Entries=[entries[0], entries[0]])
    for system in (
        {"AWSTraceHeader": {"DataType": "String", "StringValue": "not a trace header"}},
        {"AWSTraceHeader": {"DataType": "Number", "StringValue": TRACE}},
        {"SomethingElse": {"DataType": "String", "StringValue": TRACE}},
    ):
        assert await code_of(
            "send_message", QueueUrl=url, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="t",
            MessageSystemAttributes=system,
        ) == "InvalidParameterValue", system
    assert (await h.attributes(url))["ApproximateNumberOfMessages"] == "0"  # nothing half-written


TRACE = "Root=1-6745a1b2-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1"


async def test_a_trace_header_reaches_the_consumers_record_and_is_not_counted_in_the_size(
    make_sqs: MakeSqs,
) -> None:
    """SendMessage: the only message system attribute is AWSTraceHeader (a String, an X-Ray trace
    header), its size does not count towards the message's, and the answer carries
    MD5OfMessageSystemAttributes, computed as for message attributes (the SQS Developer Guide,
    "Calculating the MD5 message digest for message attributes"); the Lambda event record carries it
    in `attributes`."""
    batches = Batches()
    h = await make_sqs(recording_worker(batches))
    full = "x" * (256 * 1024)  # exactly the limit: the trace header must not push it over
    sent = await h.call(
        "send_message", QueueUrl=h.sqs.queue_url, MessageBody=full, MessageGroupId="g",
        MessageDeduplicationId="t1",
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": TRACE}},
    )
    encoded = b"".join(
        struct.pack(">I", len(part)) + part for part in (b"AWSTraceHeader", b"String")
    ) + b"\x01" + struct.pack(">I", len(TRACE)) + TRACE.encode()
    assert sent["MD5OfMessageSystemAttributes"] == hashlib.md5(encoded).hexdigest()
    await h.sqs.wait_idle()
    (record,) = batches.records
    assert record["attributes"]["AWSTraceHeader"] == TRACE
    assert record["messageAttributes"] == {}


async def test_a_batch_send_reports_each_entry_and_enqueues_only_the_valid_ones(make_sqs: MakeSqs) -> None:
    h = await make_sqs(recording_worker(Batches()), start=False)
    result = await h.call(
        "send_message_batch",
        QueueUrl=h.sqs.queue_url,
        Entries=[
            {"Id": "ok", "MessageBody": "a", "MessageGroupId": "g", "MessageDeduplicationId": "a"},
            {"Id": "no-group", "MessageBody": "b", "MessageDeduplicationId": "b"},
        ],
    )
    assert [entry["Id"] for entry in result["Successful"]] == ["ok"]
    assert [(entry["Id"], entry["Code"], entry["SenderFault"]) for entry in result["Failed"]] == [
        ("no-group", "MissingParameter", True)
    ]
    assert (await h.attributes(h.sqs.queue_url))["ApproximateNumberOfMessages"] == "1"


async def test_given_the_same_deduplication_id_within_five_minutes_then_the_message_is_enqueued_once(
    make_sqs: MakeSqs,
) -> None:
    batches = Batches()
    h = await make_sqs(recording_worker(batches))
    first = await h.send("job", "g", dedup="request-1")
    again = await h.send("job again", "g", dedup="request-1")
    other = await h.send("job", "g", dedup="request-2")
    assert (again["MessageId"], again["SequenceNumber"]) == (first["MessageId"], first["SequenceNumber"])
    assert other["MessageId"] != first["MessageId"]
    await h.sqs.wait_idle()
    assert [record["body"] for record in batches.records] == ["job", "job"]


async def test_given_a_deduplication_id_older_than_the_window_then_it_is_a_new_message(
    make_sqs: MakeSqs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window, shortened from five minutes: ids expire oldest first, and only expired ones.
    monkeypatch.setattr("chatstack.local.sqs.DEDUPLICATION_WINDOW_S", 0.5)
    h = await make_sqs(recording_worker(Batches()), start=False)
    first = await h.send("job", "g", dedup="request-1")
    await asyncio.sleep(0.3)
    second = await h.send("job", "g", dedup="request-2")
    await asyncio.sleep(0.3)  # request-1 is 0.6 s old, request-2 0.3 s
    assert (await h.send("job", "g", dedup="request-2"))["MessageId"] == second["MessageId"]
    renewed = await h.send("job", "g", dedup="request-1")
    assert renewed["MessageId"] != first["MessageId"]
    assert (await h.send("job", "g", dedup="request-1"))["MessageId"] == renewed["MessageId"]


# -- delivery --------------------------------------------------------------------------------------


async def test_given_queued_messages_when_started_then_batches_have_the_documented_sqs_event_shape(
    make_sqs: MakeSqs,
) -> None:
    batches = Batches()
    h = await make_sqs(recording_worker(batches), start=False)
    for i in range(12):
        await h.send(
            f"m{i}", f"g{i % 3}", MessageAttributes={"tenantId": {"DataType": "String", "StringValue": "t1"}}
        )
    await h.send("bin", "g0", MessageAttributes={"blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}})
    await h.sqs.start()
    await h.sqs.wait_idle()

    assert [len(event["Records"]) for event in batches.events] == [10, 3]
    documented = json.loads(FIXTURE.read_text())["Records"][1]
    for event in batches.events:
        SqsModel.model_validate(event)
        for record in event["Records"]:
            assert set(record) == set(documented)
            assert set(record["attributes"]) == set(documented["attributes"])
    first = batches.events[0]["Records"][0]
    assert first["body"] == "m0"
    assert first["md5OfBody"] == hashlib.md5(b"m0").hexdigest()
    assert first["eventSource"] == "aws:sqs" and first["awsRegion"] == "us-east-1"
    assert first["eventSourceARN"] == f"arn:aws:sqs:us-east-1:000000000000:{QUEUE.name}"
    assert first["attributes"]["ApproximateReceiveCount"] == "1"
    assert (first["attributes"]["MessageGroupId"], first["attributes"]["MessageDeduplicationId"]) == (
        "g0",
        "m0",
    )
    assert first["messageAttributes"]["tenantId"] == {
        "stringValue": "t1",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    binary = next(r for r in batches.records if r["body"] == "bin")["messageAttributes"]["blob"]
    assert base64.b64decode(binary["binaryValue"]) == b"\x00\x01"
    # Whole group prefixes, oldest group first; within a group, in send order.
    assert batches.bodies() == [
        ["m0", "m3", "m6", "m9", "bin", "m1", "m4", "m7", "m10", "m2"],
        ["m5", "m8", "m11"],
    ]
    sequence = [int(record["attributes"]["SequenceNumber"]) for record in batches.records]
    assert len(set(sequence)) == len(sequence)


def test_the_documented_sqs_fixture_parses_with_the_powertools_model() -> None:
    SqsModel.model_validate(json.loads(FIXTURE.read_text()))


async def test_given_many_groups_when_delivered_concurrently_then_each_stays_in_order_one_batch_at_a_time(
    make_sqs: MakeSqs,
) -> None:
    lock = threading.Lock()
    busy_groups: set[str] = set()
    overlaps: list[str] = []
    seen: dict[str, list[int]] = {}
    running = [0, 0]  # now, peak

    def worker(event: dict[str, Any], context: LocalLambdaContext) -> None:
        groups = {record["attributes"]["MessageGroupId"] for record in event["Records"]}
        with lock:
            overlaps.extend(busy_groups & groups)
            busy_groups.update(groups)
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.02)
        with lock:
            for record in event["Records"]:
                group, seq = record["body"].split(":")
                seen.setdefault(group, []).append(int(seq))
            busy_groups.difference_update(groups)
            running[0] -= 1

    queue = Queue("order.fifo", "order-dlq.fifo", 3, 60, batch_size=3, max_concurrency=4)
    h = await make_sqs(worker, queue=queue)
    sends = [h.send(f"g{g}:{seq}", f"g{g}", dedup=f"g{g}-{seq}") for seq in range(10) for g in range(6)]
    for send in sends:  # sequential per sender, so each group's send order is defined
        await send
    await h.sqs.wait_idle()

    assert overlaps == []
    assert seen == {f"g{g}": list(range(10)) for g in range(6)}
    assert running[1] > 1  # different groups did run at once


# -- failures, retries, dead letters ---------------------------------------------------------------


async def test_given_a_partial_batch_failure_then_only_the_failed_item_and_its_group_successors_return(
    make_sqs: MakeSqs,
) -> None:
    batches = Batches()
    worker = recording_worker(
        batches, fail=lambda r: r["body"] == "a2" and r["attributes"]["ApproximateReceiveCount"] == "1"
    )
    h = await make_sqs(worker, start=False, visibility_backoff_s=0.05)
    for body, group in [("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A")]:
        await h.send(body, group)
    await h.sqs.start()
    await h.sqs.wait_idle()

    assert batches.bodies() == [["a1", "a2", "a3", "b1"], ["a2", "a3"]]
    retried = batches.events[1]["Records"]
    assert [record["attributes"]["ApproximateReceiveCount"] for record in retried] == ["2", "2"]
    assert retried[0]["messageId"] == batches.events[0]["Records"][1]["messageId"]
    assert retried[0]["receiptHandle"] != batches.events[0]["Records"][1]["receiptHandle"]
    assert h.sqs.dead_letters == []


@pytest.mark.parametrize(
    "outcome",
    ["raise", "unknown-id", "not-an-object"],
)
async def test_given_an_exception_or_invalid_response_then_the_whole_batch_is_redelivered(
    make_sqs: MakeSqs, outcome: str
) -> None:
    batches = Batches()

    def worker(event: dict[str, Any], context: LocalLambdaContext) -> Any:
        batches.add(event)
        if len(batches.events) > 1:
            return None  # a null response: the whole batch succeeded
        if outcome == "raise":
            raise RuntimeError("model endpoint down")
        if outcome == "unknown-id":
            return {"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]}
        return "ok"

    h = await make_sqs(worker, start=False, visibility_backoff_s=0.05)
    for body, group in [("a1", "A"), ("b1", "B"), ("a2", "A")]:
        await h.send(body, group)
    await h.sqs.start()
    await h.sqs.wait_idle()

    assert batches.bodies() == [["a1", "a2", "b1"], ["a1", "a2", "b1"]]
    assert {r["attributes"]["ApproximateReceiveCount"] for r in batches.events[1]["Records"]} == {"2"}


async def test_given_a_poison_message_then_it_moves_to_the_dead_letter_queue_after_max_receives(
    make_sqs: MakeSqs,
) -> None:
    batches = Batches()
    delivered_at: list[float] = []

    def worker(event: dict[str, Any], context: LocalLambdaContext) -> dict[str, Any]:
        delivered_at.append(time.monotonic())
        batches.add(event)
        return {
            "batchItemFailures": [
                {"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "poison"
            ]
        }

    h = await make_sqs(worker, visibility_backoff_s=0.1)
    await h.send("poison", "P")
    while not batches.events:
        await asyncio.sleep(0.01)
    await h.send("next", "P")  # queued behind the poison message in its group
    await h.send("other", "Q")
    await h.sqs.wait_idle()

    bodies = [event["Records"][0]["body"] for event in batches.events]
    poison = [i for i, body in enumerate(bodies) if body == "poison"]
    counts = [batches.events[i]["Records"][0]["attributes"]["ApproximateReceiveCount"] for i in poison]
    assert counts == ["1", "2", "3"]
    first_retry = delivered_at[poison[1]] - delivered_at[poison[0]]
    second_retry = delivered_at[poison[2]] - delivered_at[poison[1]]
    assert first_retry >= 0.09 and second_retry >= 0.19  # backoff * 2 ** (receives - 1)
    # Another group is not held up; the poison message's own group moves on once it is dead-lettered.
    assert [body for body in bodies if body != "poison"] == ["other", "next"]
    assert bodies.index("next") > poison[-1]

    (dead,) = h.sqs.dead_letters
    assert dead["body"] == "poison" and dead["attributes"]["ApproximateReceiveCount"] == "3"
    assert dead["eventSourceARN"].endswith(QUEUE.dead_letter_name)
    assert (await h.attributes(h.sqs.dead_letter_queue_url))["ApproximateNumberOfMessages"] == "1"
    assert (await h.attributes(h.sqs.queue_url))["ApproximateNumberOfMessages"] == "0"


async def test_in_flight_messages_count_as_not_visible(make_sqs: MakeSqs) -> None:
    release = threading.Event()

    def worker(event: dict[str, Any], context: LocalLambdaContext) -> None:
        release.wait(10)

    queue = Queue("count.fifo", "count-dlq.fifo", 3, 60, batch_size=2, max_concurrency=4)
    h = await make_sqs(worker, queue=queue, start=False)
    for body in ("1", "2", "3"):
        await h.send(body, "g")
    await h.sqs.start()
    await asyncio.sleep(0.2)
    attributes = await h.attributes(h.sqs.queue_url)
    release.set()
    assert (
        attributes["ApproximateNumberOfMessagesNotVisible"],
        attributes["ApproximateNumberOfMessages"],
    ) == (
        "2",
        "1",
    )
    await h.sqs.wait_idle()
    assert (await h.attributes(h.sqs.queue_url))["ApproximateNumberOfMessages"] == "0"


async def test_an_invocation_that_reached_no_host_is_retried_without_spending_a_receive(
    make_sqs: MakeSqs,
) -> None:
    """Every local Lambda host down (restarting): no handler ran, as when Lambda throttles, so the
    mapping retries and the message is not dead-lettered however long the outage lasts."""
    from chatstack.local.lambda_context import NotInvoked

    batches = Batches()
    outages = [QUEUE.max_receive_count + 2]

    def worker(event: dict[str, Any], context: LocalLambdaContext) -> dict[str, Any]:
        if outages[0] > 0:
            outages[0] -= 1
            raise NotInvoked("No Lambda host accepted the invocation.")
        batches.add(event)
        return {"batchItemFailures": []}

    h = await make_sqs(worker, visibility_backoff_s=0.02)
    await h.send("survives", "G")
    await h.sqs.wait_idle()
    assert batches.bodies() == [["survives"]]
    assert batches.records[0]["attributes"]["ApproximateReceiveCount"] == "1"
    assert h.sqs.dead_letters == []
