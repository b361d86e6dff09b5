"""SQS FIFO: the generation queue between sendMessage and the worker (one group per conversation).

`enqueue` runs once per chat message inside sendMessage's transaction. boto3's `send_message` was the
largest single item of that handler under load (14.5 % of the Lambda hosts' samples; alone, 1.43-1.59
ms of CPU per send against 0.62-0.74 ms now: docs/benchmarks.md, "Hot path").
So the first attempt is the request boto3 would send (AWS JSON 1.0, `X-Amz-Target:
AmazonSQS.SendMessage`, the same body and SigV4 headers; tests/functional/test_queue_adapter.py checks
them byte for byte), made over a kept connection (lambdas/adapters/http1.py) to the endpoint boto3
itself resolved. Any other answer than 200, or none, hands the same call to boto3, which retries as
configured and raises SQS's own exceptions: the deduplication id makes a send that did arrive harmless
for five minutes.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.credentials import Credentials

from lambdas.adapters.http1 import NoAnswer
from lambdas.adapters.signed_http import SignedEndpoint

SERVICE = "sqs"
# Lambda sets this to the invocation's X-Ray trace header when the function has active tracing.
TRACE_HEADER_ENV = "_X_AMZN_TRACE_ID"
SEND_HEADERS = {
    "X-Amz-Target": "AmazonSQS.SendMessage",
    "Content-Type": "application/x-amz-json-1.0",
    "x-amzn-query-mode": "true",  # botocore's flag for SQS's query-compatible error codes
}


class JobQueue:
    def __init__(
        self,
        queue_url: str,
        *,
        region: str,
        endpoint_url: str = "",
        client: Any | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        """`client`: a stand-in boto3 client (tests); then every send goes through it."""
        if not queue_url:
            raise ValueError("No queue URL: set CHATSTACK_QUEUE_URL.")
        self.queue_url = queue_url
        self.client = client or boto3.client(
            "sqs",
            region_name=region,
            endpoint_url=endpoint_url or None,
            config=Config(
                retries={"total_max_attempts": 3, "mode": "standard"},
                connect_timeout=2,
                read_timeout=5,
                max_pool_connections=64,
            ),
        )
        self._direct: SignedEndpoint | None = None
        if client is None:  # the endpoint boto3 resolved (endpoint_url, AWS_ENDPOINT_URL_SQS or region)
            self._direct = SignedEndpoint(
                self.client.meta.endpoint_url, region=self.client.meta.region_name, service=SERVICE,
                what="SQS", credentials=credentials,
            )

    def signed_send(
        self, params: dict[str, Any], now: datetime | None = None
    ) -> tuple[str, bytes, dict[str, str]]:
        """The path, body and headers of the SendMessage request boto3 would make with `params`."""
        if self._direct is None:
            raise ValueError("This queue sends through the boto3 client it was given.")
        path, body = self._direct.base_path or "/", json.dumps(params).encode()  # as botocore posts
        return path, body, self._direct.sign(path, body, SEND_HEADERS, now=now)

    def enqueue(self, job: dict[str, Any], *, group_id: str, deduplication_id: str) -> str:
        """Send one job; the deduplication id makes a retried send harmless for five minutes.

        Under active tracing the job carries the sender's trace header as the `AWSTraceHeader` system
        attribute, so the worker's invocation joins sendMessage's trace: the X-Ray SDK would add it to
        boto3's calls, but this send does not go through boto3 and the functions load no SDK
        (https://docs.aws.amazon.com/xray/latest/devguide/xray-services-sqs.html)."""
        params: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MessageBody": json.dumps(job, separators=(",", ":")),
            "MessageGroupId": group_id,
            "MessageDeduplicationId": deduplication_id,
        }
        trace = os.environ.get(TRACE_HEADER_ENV)
        if trace:
            header = {"DataType": "String", "StringValue": trace}
            params["MessageSystemAttributes"] = {"AWSTraceHeader": header}
        if self._direct is not None:
            path, body, headers = self.signed_send(params)
            try:
                response = self._direct.send(path, body, headers)
            except NoAnswer:
                response = None
            if response is not None and response.status == 200:
                return str(json.loads(response.data)["MessageId"])
        return str(self.client.send_message(**params)["MessageId"])
