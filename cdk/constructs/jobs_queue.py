"""The generation queue (SQS FIFO, one message group per conversation) and its dead-letter queue,
both KMS-encrypted and TLS-only, shaped by `lambdas.wiring.JOBS_QUEUE`."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from lambdas import wiring


class JobsQueue(Construct):
    """`queue` and `dead_letters`; `event_source()` is the worker's batched, concurrent consumer."""

    def __init__(
        self, scope: Construct, id: str, *, key: kms.IKey, spec: wiring.Queue, name_prefix: str
    ) -> None:
        super().__init__(scope, id)
        self.spec = spec
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            queue_name=_named(spec.dead_letter_name, name_prefix),
            fifo=True,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=_named(spec.name, name_prefix),
            fifo=True,
            content_based_deduplication=False,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            data_key_reuse=Duration.minutes(5),
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(spec.visibility_timeout_s),
            retention_period=Duration.days(1),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letters, max_receive_count=spec.max_receive_count
            ),
        )

    def event_source(self) -> lambda_.IEventSource:
        return sources.SqsEventSource(
            self.queue,
            batch_size=self.spec.batch_size,
            max_concurrency=self.spec.max_concurrency,
            report_batch_item_failures=True,
        )


def _named(wiring_name: str, name_prefix: str) -> str:
    """The wiring's names start with `chatstack`; a deployment with another name swaps that prefix."""
    return name_prefix + wiring_name.removeprefix("chatstack")
