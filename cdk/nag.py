"""cdk-nag acknowledgments: every suppressed rule carries the reason it does not apply."""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

MIN_REASON = 40


def managed_policy(name: str) -> str:
    """The AwsSolutions-IAM4 finding id of one AWS managed policy."""
    return f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{name}]"


def wildcard(resource_or_action: str) -> str:
    """The AwsSolutions-IAM5 finding id of one wildcard (`Resource::...` or `Action::...`)."""
    return f"AwsSolutions-IAM5[{resource_or_action}]"


def acknowledge(scope: IConstruct, rules: Iterable[dict[str, str]]) -> None:
    """Acknowledge `rules` ({"id", "reason"}) on `scope` and everything below it."""
    for rule in rules:
        if len(rule["reason"]) < MIN_REASON:
            raise ValueError(f"The reason for {rule['id']} must say why it does not apply.")
        Validations.of(scope).acknowledge(Acknowledgment(id=rule["id"], reason=rule["reason"]))
