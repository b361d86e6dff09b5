"""SQS FIFO: the generation queue between sendMessage and the worker (one group per conversation)."""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.config import Config


class JobQueue:
    def __init__(
        self, queue_url: str, *, region: str, endpoint_url: str = "", client: Any | None = None
    ) -> None:
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

    def enqueue(self, job: dict[str, Any], *, group_id: str, deduplication_id: str) -> str:
        """Send one job; the deduplication id makes a retried send harmless for five minutes."""
        response = self.client.send_message(
            QueueUrl=self.queue_url,
            MessageBody=json.dumps(job, separators=(",", ":")),
            MessageGroupId=group_id,
            MessageDeduplicationId=deduplication_id,
        )
        return str(response["MessageId"])
