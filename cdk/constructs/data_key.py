"""The region's customer-managed KMS key for data at rest (Aurora, Valkey, SQS, SNS)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct


class DataKey(Construct):
    """A rotating symmetric key, retained at teardown because the retained database snapshot needs it."""

    def __init__(self, scope: Construct, id: str, *, alias: str) -> None:
        super().__init__(scope, id)
        self.key = kms.Key(
            self,
            "Key",
            alias=alias,
            description="chatstack data at rest",
            enable_key_rotation=True,
            pending_window=Duration.days(30),
            removal_policy=RemovalPolicy.RETAIN,
        )
        # CloudWatch alarms publish to the KMS-encrypted alarm topic.
        self.key.grant(
            iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*"
        )
