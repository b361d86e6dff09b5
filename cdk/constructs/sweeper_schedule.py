"""The sweeper on a schedule: an EventBridge rule invokes it every `wiring.SWEEP_INTERVAL_S`, so a
request whose worker died is enqueued again within about a minute even when no client comes back
(lambdas/services/recovery.py). SQS's own redelivery waits out the visibility timeout (six times the
worker's timeout), far too long for a chat."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from lambdas import wiring


class SweeperSchedule(Construct):
    def __init__(self, scope: Construct, id: str, *, function: lambda_.IFunction) -> None:
        super().__init__(scope, id)
        self.rule = events.Rule(
            self,
            "Rule",
            description="Enqueues again accepted chat requests whose generation died",
            schedule=events.Schedule.rate(Duration.seconds(wiring.SWEEP_INTERVAL_S)),
            targets=[targets.LambdaFunction(function, retry_attempts=0)],
        )
