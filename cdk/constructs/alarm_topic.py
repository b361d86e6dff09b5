"""The region's alarm topic: KMS-encrypted, TLS-only, with the operators' email subscribed."""

from __future__ import annotations

from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


class AlarmTopic(Construct):
    def __init__(self, scope: Construct, id: str, *, topic_name: str, key: kms.IKey, email: str) -> None:
        super().__init__(scope, id)
        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=topic_name,
            master_key=key,
            enforce_ssl=True,
            display_name="chatstack alarms",
        )
        self.topic.add_subscription(subscriptions.EmailSubscription(email))
