"""A local SQS FIFO queue and the Lambda event source mapping that drains it into the worker.

Producers call it with boto3 exactly as in the cloud (`boto3.client("sqs", endpoint_url=...)`):
botocore speaks SQS's AWS JSON 1.0 protocol (`X-Amz-Target: AmazonSQS.<Op>`) and posts every call to
the endpoint URL itself, naming the queue by `QueueUrl` in the body. Errors come back in the same
JSON shape with the `x-amzn-query-error` header, so boto3 raises the same exceptions as against AWS.

The dispatcher behaves like an SQS event source mapping with ReportBatchItemFailures: it delivers
available messages at once (no batching window) in batches of up to `queue.batch_size`, runs up to
`max_concurrency` worker invocations in threads, keeps strict order and at most one batch in flight
per message group, redelivers failed messages after a growing backoff (standing in for the
visibility timeout) and moves a message to the dead-letter list after `queue.max_receive_count`
receives, as SQS's redrive policy does. The Lambda host ends a worker invocation at the function's
timeout (Lambda's `Sandbox.Timedout` error): a failed invocation, so the batch is redelivered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import struct
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from chatstack.local.lambda_context import Handler, NotInvoked, invoke
from chatstack.local.lambda_host import FunctionError
from chatstack.local.threads import Threads
from lambdas.wiring import Queue

logger = logging.getLogger(__name__)

DEDUPLICATION_WINDOW_S = 5 * 60
MAX_BATCH_ENTRIES = 10
SENDER_ID = "AIDALOCALCHATSTACKSQS"
_JSON = "application/x-amz-json-1.0"
_QUERY_CODES = {  # the former Query-protocol codes boto3 maps back to modeled exceptions
    "QueueDoesNotExist": "AWS.SimpleQueueService.NonExistentQueue",
    "EmptyBatchRequest": "AWS.SimpleQueueService.EmptyBatchRequest",
    "TooManyEntriesInBatchRequest": "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
    "BatchEntryIdsNotDistinct": "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
    "InvalidBatchEntryId": "AWS.SimpleQueueService.InvalidBatchEntryId",
    "BatchRequestTooLong": "AWS.SimpleQueueService.BatchRequestTooLong",
}
_INVALID_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_FIFO_ID = re.compile(r"[\x21-\x7e]{1,128}")
_BATCH_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
# An X-Ray trace header names its trace: Root=1-<8 hex: epoch seconds>-<24 hex>
# (https://docs.aws.amazon.com/xray/latest/devguide/xray-concepts.html#xray-concepts-tracingheader).
_TRACE_HEADER = re.compile(r"(?:^|;)\s*Root=1-[0-9a-f]{8}-[0-9a-f]{24}(?:;|$)")


class SqsError(Exception):
    """A sender fault, answered as SQS answers it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class _Message:
    message_id: str
    body: str
    group_id: str
    deduplication_id: str
    sequence_number: str
    sent_ms: int
    attributes: dict[str, dict[str, Any]]
    trace_header: str = ""  # the AWSTraceHeader system attribute, if the sender set one
    receive_count: int = 0
    first_receive_ms: int = 0

    def record(self, *, receipt_handle: str, source_arn: str, region: str) -> dict[str, Any]:
        """The message as one record of the documented SQS Lambda event."""
        return {
            "messageId": self.message_id,
            "receiptHandle": receipt_handle,
            "body": self.body,
            "attributes": {
                "ApproximateReceiveCount": str(self.receive_count),
                "SentTimestamp": str(self.sent_ms),
                "SenderId": SENDER_ID,
                "ApproximateFirstReceiveTimestamp": str(self.first_receive_ms or self.sent_ms),
                "SequenceNumber": self.sequence_number,
                "MessageGroupId": self.group_id,
                "MessageDeduplicationId": self.deduplication_id,
                **({"AWSTraceHeader": self.trace_header} if self.trace_header else {}),
            },
            "messageAttributes": self.attributes,
            "md5OfBody": hashlib.md5(self.body.encode()).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": source_arn,
            "awsRegion": region,
        }


@dataclass(eq=False)
class _Group:
    messages: deque[_Message] = field(default_factory=deque)
    in_flight: int = 0  # the first `in_flight` messages are in a batch being processed
    hold_until: float = 0.0  # event-loop time before which the group is not delivered (backoff)


class LocalSqs:
    """One SQS FIFO queue with its dead-letter queue, served over HTTP and drained into `worker`."""

    def __init__(
        self,
        *,
        queue: Queue,
        worker: Handler,
        base_url: str,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        visibility_backoff_s: float = 1.0,
        max_concurrency: int | None = None,
        content_based_deduplication: bool = False,
        max_message_bytes: int = 256 * 1024,
    ) -> None:
        self.queue = queue
        self.worker = worker
        self.endpoint_url = base_url.rstrip("/")
        self.region = region
        self.account_id = account_id
        self.visibility_backoff_s = visibility_backoff_s
        self.max_concurrency = max_concurrency or queue.max_concurrency
        self.content_based_deduplication = content_based_deduplication
        self.max_message_bytes = max_message_bytes
        self.queue_url = self.url_for(base_url, queue, account_id)
        self.dead_letter_queue_url = f"{self.endpoint_url}/{account_id}/{queue.dead_letter_name}"
        self.queue_arn = f"arn:aws:sqs:{region}:{account_id}:{queue.name}"
        self.dead_letter_queue_arn = f"arn:aws:sqs:{region}:{account_id}:{queue.dead_letter_name}"
        self._created = int(time.time())
        self._groups: dict[str, _Group] = {}
        self._dead: list[_Message] = []
        # Oldest first (an id is stored once and only after its earlier entry expired), so expiry pops
        # from the front: constant time per send, however many messages the window holds.
        self._deduplication: OrderedDict[str, tuple[float, _Message]] = OrderedDict()
        self._sequence = time.time_ns()
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._invocations: set[asyncio.Task[None]] = set()
        self._threads = Threads(self.max_concurrency, "sqs")

    # -- public surface -------------------------------------------------------------------------

    @staticmethod
    def url_for(base_url: str, queue: Queue, account_id: str = "000000000000") -> str:
        """The QueueUrl a stand-in at `base_url` gives `queue` (known before the stand-in exists)."""
        return f"{base_url.rstrip('/')}/{account_id}/{queue.name}"

    @property
    def routes(self) -> list[BaseRoute]:
        """The JSON-protocol endpoint, at the path of `base_url` (botocore posts there)."""
        path = urlsplit(self.endpoint_url).path or "/"
        return [Route(path, self._api, methods=["POST"])]

    @property
    def dead_letters(self) -> list[dict[str, Any]]:
        """Messages moved to the dead-letter queue, as SQS Lambda event records, oldest first."""
        return [self._record(message, self.dead_letter_queue_arn) for message in self._dead]

    async def start(self) -> None:
        """Start delivering to the worker (messages sent before this wait in the queue)."""
        if self._dispatcher is None:
            self._wake = asyncio.Event()
            self._dispatcher = asyncio.create_task(self._dispatch())

    async def stop(self) -> None:
        """Stop delivering and wait for the invocations in flight; undelivered messages stay queued."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None
        if self._invocations:
            await asyncio.gather(*list(self._invocations), return_exceptions=True)

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every message was processed or dead-lettered and no invocation runs."""
        with anyio.fail_after(timeout):
            while self._groups or self._invocations:
                await asyncio.sleep(0.01)

    # -- the JSON protocol -----------------------------------------------------------------------

    async def _api(self, request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        operation = target.removeprefix("AmazonSQS.")
        handler: Callable[[dict[str, Any]], dict[str, Any]] | None = {
            "SendMessage": self._send_message,
            "SendMessageBatch": self._send_message_batch,
            "GetQueueUrl": self._get_queue_url,
            "GetQueueAttributes": self._get_queue_attributes,
        }.get(operation)
        try:
            if handler is None:
                raise SqsError(
                    "InvalidAction", f"The action {operation or target!r} is not valid for this endpoint."
                )
            try:
                params = json.loads(await request.body() or b"{}")
            except ValueError:
                raise SqsError("SerializationException", "The request body is not valid JSON.") from None
            if not isinstance(params, dict):
                raise SqsError("SerializationException", "The request body must be a JSON object.")
            return JSONResponse(handler(params), media_type=_JSON)
        except SqsError as error:
            return _error_response(error)

    def _target_queue(self, params: dict[str, Any]) -> str:
        """ "main" or "dead" from QueueUrl's path (its host is whatever name the client used)."""
        url = params.get("QueueUrl")
        if not isinstance(url, str) or not url:
            raise SqsError("MissingParameter", "The request must contain the parameter QueueUrl.")
        path = urlsplit(url).path.rstrip("/")
        if path.endswith(f"/{self.account_id}/{self.queue.name}"):
            return "main"
        if path.endswith(f"/{self.account_id}/{self.queue.dead_letter_name}"):
            return "dead"
        raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        target = self._target_queue(params)
        return self._accept(target, params)

    def _send_message_batch(self, params: dict[str, Any]) -> dict[str, Any]:
        target = self._target_queue(params)
        entries = params.get("Entries") or []
        if not entries:
            raise SqsError("EmptyBatchRequest", "There should be at least one SendMessageBatchRequestEntry.")
        if len(entries) > MAX_BATCH_ENTRIES:
            raise SqsError(
                "TooManyEntriesInBatchRequest", f"Maximum number of entries is {MAX_BATCH_ENTRIES}."
            )
        ids = [entry.get("Id") for entry in entries]
        if any(not isinstance(i, str) or not _BATCH_ENTRY_ID.fullmatch(i) for i in ids):
            raise SqsError(
                "InvalidBatchEntryId", "A batch entry id can only contain letters, digits, - and _."
            )
        if len(set(ids)) != len(ids):
            raise SqsError("BatchEntryIdsNotDistinct", "Two or more batch entries have the same Id.")
        if sum(len(str(entry.get("MessageBody", "")).encode()) for entry in entries) > self.max_message_bytes:
            raise SqsError(
                "BatchRequestTooLong", f"The batch must be shorter than {self.max_message_bytes} bytes."
            )
        successful: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for entry in entries:
            try:
                result = self._accept(target, entry)
            except SqsError as error:
                failed.append(
                    {"Id": entry["Id"], "SenderFault": True, "Code": error.code, "Message": error.message}
                )
            else:
                successful.append({"Id": entry["Id"], **result})
        return {"Successful": successful, "Failed": failed}

    def _accept(self, target: str, params: dict[str, Any]) -> dict[str, Any]:
        """Validate one message as a FIFO queue does, then enqueue it once per deduplication id."""
        body = params.get("MessageBody")
        if not isinstance(body, str) or not body:
            raise SqsError("MissingParameter", "The request must contain the parameter MessageBody.")
        if _INVALID_CHARS.search(body):
            raise SqsError("InvalidMessageContents", "Invalid characters found in the message body.")
        attributes, attributes_md5, attributes_size = _message_attributes(
            params.get("MessageAttributes") or {}
        )
        trace_header, system_md5 = _system_attributes(params.get("MessageSystemAttributes") or {})
        # A system attribute does not count towards the message's size (SendMessage's documentation).
        if len(body.encode()) + attributes_size > self.max_message_bytes:
            raise SqsError(
                "InvalidParameterValue",
                "One or more parameters are invalid. Reason: Message must be shorter than "
                f"{self.max_message_bytes} bytes.",
            )
        if params.get("DelaySeconds"):
            raise SqsError(
                "InvalidParameterValue",
                "Value for parameter DelaySeconds is invalid. "
                "Reason: FIFO queues do not support per-message delays.",
            )
        group_id = params.get("MessageGroupId")
        if not group_id:
            raise SqsError("MissingParameter", "The request must contain the parameter MessageGroupId.")
        deduplication_id = params.get("MessageDeduplicationId")
        if not deduplication_id:
            if not self.content_based_deduplication:
                raise SqsError(
                    "InvalidParameterValue",
                    "The queue should either have ContentBasedDeduplication enabled or "
                    "MessageDeduplicationId provided explicitly",
                )
            deduplication_id = hashlib.sha256(body.encode()).hexdigest()
        for name, value in (("MessageGroupId", group_id), ("MessageDeduplicationId", deduplication_id)):
            if not isinstance(value, str) or not _FIFO_ID.fullmatch(value):
                raise SqsError("InvalidParameterValue", f"Value {value!r} for parameter {name} is invalid.")

        message = self._deduplicated(target, deduplication_id)
        if message is None:
            self._sequence += 1
            message = _Message(
                message_id=str(uuid.uuid4()),
                body=body,
                group_id=group_id,
                deduplication_id=deduplication_id,
                sequence_number=str(self._sequence),
                sent_ms=int(time.time() * 1000),
                attributes=attributes,
                trace_header=trace_header,
            )
            self._deduplication[f"{target}:{deduplication_id}"] = (time.monotonic(), message)
            self._enqueue(target, message)
        result = {
            "MessageId": message.message_id,
            "MD5OfMessageBody": hashlib.md5(body.encode()).hexdigest(),
            "SequenceNumber": message.sequence_number,
        }
        if attributes_md5:
            result["MD5OfMessageAttributes"] = attributes_md5
        if system_md5:
            result["MD5OfMessageSystemAttributes"] = system_md5
        return result

    def _deduplicated(self, target: str, deduplication_id: str) -> _Message | None:
        """The message already accepted with this id in the last five minutes, if any."""
        horizon = time.monotonic() - DEDUPLICATION_WINDOW_S
        while self._deduplication:
            at, _ = next(iter(self._deduplication.values()))
            if at >= horizon:
                break
            self._deduplication.popitem(last=False)
        seen = self._deduplication.get(f"{target}:{deduplication_id}")
        return seen[1] if seen else None

    def _enqueue(self, target: str, message: _Message) -> None:
        if target == "dead":
            self._dead.append(message)
            return
        self._groups.setdefault(message.group_id, _Group()).messages.append(message)
        if self._wake is not None:
            self._wake.set()

    def _get_queue_url(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("QueueName")
        urls = {self.queue.name: self.queue_url, self.queue.dead_letter_name: self.dead_letter_queue_url}
        if name not in urls:
            raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return {"QueueUrl": urls[name]}

    def _get_queue_attributes(self, params: dict[str, Any]) -> dict[str, Any]:
        target = self._target_queue(params)
        attributes = self._attributes(target)
        names = params.get("AttributeNames") or []
        if "All" in names:
            return {"Attributes": attributes}
        unknown = [name for name in names if name not in attributes]
        if unknown:
            raise SqsError("InvalidAttributeName", f"Unknown Attribute {unknown[0]}.")
        return {"Attributes": {name: attributes[name] for name in names}}

    def _attributes(self, target: str) -> dict[str, str]:
        if target == "dead":
            visible, not_visible = len(self._dead), 0
        else:
            now = self._now()
            not_visible = sum(
                group.in_flight
                or (sum(1 for m in group.messages if m.receive_count) if group.hold_until > now else 0)
                for group in self._groups.values()
            )
            visible = sum(len(group.messages) for group in self._groups.values()) - not_visible
        attributes = {
            "QueueArn": self.dead_letter_queue_arn if target == "dead" else self.queue_arn,
            "ApproximateNumberOfMessages": str(visible),
            "ApproximateNumberOfMessagesNotVisible": str(not_visible),
            "ApproximateNumberOfMessagesDelayed": "0",
            "CreatedTimestamp": str(self._created),
            "LastModifiedTimestamp": str(self._created),
            "VisibilityTimeout": str(self.queue.visibility_timeout_s),
            "MaximumMessageSize": str(self.max_message_bytes),
            "MessageRetentionPeriod": "345600",
            "DelaySeconds": "0",
            "ReceiveMessageWaitTimeSeconds": "0",
            "FifoQueue": "true",
            "ContentBasedDeduplication": str(self.content_based_deduplication).lower(),
            "DeduplicationScope": "queue",
            "FifoThroughputLimit": "perQueue",
        }
        if target == "main":
            policy = {
                "deadLetterTargetArn": self.dead_letter_queue_arn,
                "maxReceiveCount": self.queue.max_receive_count,
            }
            attributes["RedrivePolicy"] = json.dumps(policy)
        return attributes

    # -- the event source mapping ----------------------------------------------------------------

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def _dispatch(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            while len(self._invocations) < self.max_concurrency:
                batch = self._take_batch()
                if not batch:
                    break
                task = asyncio.create_task(self._deliver(batch))
                self._invocations.add(task)
                task.add_done_callback(self._invocations.discard)
            holds = [
                g.hold_until for g in self._groups.values() if not g.in_flight and g.hold_until > self._now()
            ]
            timeout = min(holds) - self._now() if holds else None
            with contextlib.suppress(TimeoutError):  # a backoff ended: look again
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _take_batch(self) -> list[_Message]:
        """The oldest available messages: group prefixes in order, from groups with nothing in flight."""
        now = self._now()
        ready = [g for g in self._groups.values() if not g.in_flight and g.hold_until <= now and g.messages]
        ready.sort(key=lambda group: int(group.messages[0].sequence_number))
        batch: list[_Message] = []
        for group in ready:
            room = self.queue.batch_size - len(batch)
            if room <= 0:
                break
            taken = list(group.messages)[:room]
            group.in_flight = len(taken)
            batch.extend(taken)
        return batch

    async def _deliver(self, batch: list[_Message]) -> None:
        now_ms = int(time.time() * 1000)
        for message in batch:
            message.receive_count += 1
            message.first_receive_ms = message.first_receive_ms or now_ms
        event = {"Records": [self._record(message, self.queue_arn) for message in batch]}
        failed: set[str] | None
        try:
            response = await self._threads.run(invoke, self.worker, event)
            failed = _batch_item_failures(response, {message.message_id for message in batch})
            if failed is None:
                logger.error(
                    "worker answered an invalid batch response %r: the whole batch is retried", response
                )
        except NotInvoked as exc:  # no handler ran: retry soon, and the receive does not count
            logger.warning("worker not invoked (%s): the batch of %d is retried", exc, len(batch))
            for message in batch:
                message.receive_count -= 1
            failed = None
        except FunctionError as exc:  # the host printed the handler's traceback; one line here
            logger.warning(
                "worker failed (%s: %s): the whole batch of %d is retried", exc.error_type, exc, len(batch)
            )
            failed = None
        except Exception:
            logger.exception("worker failed: the whole batch of %d is retried", len(batch))
            failed = None
        self._settle(batch, failed)
        assert self._wake is not None
        self._wake.set()

    def _settle(self, batch: list[_Message], failed: set[str] | None) -> None:
        """Delete what succeeded; a failure keeps itself and the rest of its group for redelivery."""
        now = self._now()
        for group_id in dict.fromkeys(message.group_id for message in batch):
            group = self._groups[group_id]
            delivered = list(group.messages)[: group.in_flight]
            group.in_flight = 0
            done = next(
                (i for i, m in enumerate(delivered) if failed is None or m.message_id in failed),
                len(delivered),
            )
            for _ in range(done):
                group.messages.popleft()
            # Redrive: a message received max_receive_count times moves to the dead-letter queue.
            for message in delivered[done:]:
                if message.receive_count >= self.queue.max_receive_count:
                    group.messages.remove(message)
                    self._dead.append(message)
            retried = [m for m in delivered[done:] if m.receive_count < self.queue.max_receive_count]
            if retried:
                group.hold_until = now + self.visibility_backoff_s * 2 ** (retried[0].receive_count - 1)
            if not group.messages:
                del self._groups[group_id]

    def _record(self, message: _Message, source_arn: str) -> dict[str, Any]:
        receipt = base64.b64encode(f"{message.message_id}:{uuid.uuid4()}".encode()).decode()
        return message.record(receipt_handle=receipt, source_arn=source_arn, region=self.region)


def _batch_item_failures(response: Any, batch_ids: set[str]) -> set[str] | None:
    """Failed message ids from a ReportBatchItemFailures response; None when the whole batch failed.

    As documented for Lambda: a null or empty response or list means success; a response that is not
    an object, or an itemIdentifier that is missing, empty or not in the batch, fails the whole batch.
    """
    if response is None:
        return set()
    if not isinstance(response, dict):
        return None
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    failed = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in batch_ids:
            return None
        failed.add(identifier)
    return failed


def _message_attributes(raw: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], str | None, int]:
    """Lambda-event form, SQS's MD5OfMessageAttributes and the size counted against the limit."""
    if not isinstance(raw, dict) or len(raw) > 10:
        raise SqsError("InvalidParameterValue", "A message can have at most 10 message attributes.")
    digest = hashlib.md5()
    size = 0
    converted: dict[str, dict[str, Any]] = {}
    for name in sorted(raw):
        value = raw[name]
        data_type = value.get("DataType") if isinstance(value, dict) else None
        if not isinstance(data_type, str) or not data_type:
            raise SqsError(
                "InvalidParameterValue", f"The message attribute '{name}' must contain a DataType."
            )
        binary = data_type.startswith("Binary")
        text = value.get("BinaryValue" if binary else "StringValue")
        if not isinstance(text, str) or not text:
            raise SqsError("InvalidParameterValue", f"The message attribute '{name}' must contain a value.")
        payload = base64.b64decode(text) if binary else text.encode()
        for part in (name.encode(), data_type.encode()):
            digest.update(struct.pack(">I", len(part)) + part)
        digest.update((b"\x02" if binary else b"\x01") + struct.pack(">I", len(payload)) + payload)
        size += len(name.encode()) + len(data_type.encode()) + len(payload)
        converted[name] = {
            "binaryValue" if binary else "stringValue": text,
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": data_type,
        }
    return converted, (digest.hexdigest() if converted else None), size


def _system_attributes(raw: dict[str, Any]) -> tuple[str, str | None]:
    """The trace header of `MessageSystemAttributes` and its MD5 (as SQS computes message attributes').
    SendMessage's documentation: the only system attribute is `AWSTraceHeader`, of type `String`, a
    correctly formatted X-Ray trace header."""
    if not isinstance(raw, dict):
        raise SqsError("InvalidParameterValue", "MessageSystemAttributes must be a map.")
    unknown = sorted(set(raw) - {"AWSTraceHeader"})
    if unknown:
        raise SqsError("InvalidParameterValue", f"Message system attribute name '{unknown[0]}' is invalid.")
    if not raw:
        return "", None
    value = raw["AWSTraceHeader"]
    if not isinstance(value, dict) or value.get("DataType") != "String":
        raise SqsError("InvalidParameterValue", "The AWSTraceHeader system attribute must be of type String.")
    header = value.get("StringValue")
    if not isinstance(header, str) or not _TRACE_HEADER.search(header):
        raise SqsError(
            "InvalidParameterValue", f"Value {header!r} for AWSTraceHeader is not an X-Ray trace header."
        )
    _, digest, _ = _message_attributes({"AWSTraceHeader": value})
    return header, digest


def _error_response(error: SqsError) -> Response:
    query_code = _QUERY_CODES.get(error.code, error.code)
    headers = {"x-amzn-query-error": f"{query_code};Sender", "x-amzn-RequestId": str(uuid.uuid4())}
    body = {"__type": f"com.amazonaws.sqs#{error.code}", "message": error.message}
    return JSONResponse(body, status_code=400, headers=headers, media_type=_JSON)
