"""Alarm-driven promotion of a secondary region (the automatic half of failover; docs/deploy.md).

Every minute an EventBridge schedule runs the failover function, which GETs the primary region's
deep `/healthz` from here and publishes `Chatstack/Failover PrimaryHealthy` (1 or 0). An alarm on
that metric, `probe_failures` failed minutes in a row, invokes the same function (a CloudWatch alarm
Lambda action), which promotes this region's Aurora cluster (FailoverGlobalCluster, AllowDataLoss)
and Valkey group (FailoverGlobalReplicationGroup), and notifies the alarm topic. Missing probes do
not count as failures: a broken probe must never promote. The probe runs outside the VPC, so it
depends on neither this region's NAT gateways nor the primary's network.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from constructs import Construct

from cdk.nag import acknowledge, wildcard
from lambdas.handlers.failover import METRIC, NAMESPACE


class AutomaticFailover(Construct):
    """`alarm` (primary unreachable) and `schedule` (the probe) around one failover `function`."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        function: lambda_.Function,
        primary_region: str,
        global_cluster_id: str,
        member_clusters: dict[str, str],
        valkey_global_id: str | None,
        valkey_group_id: str,
        probe_failures: int,
        topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        arn = f"arn:{stack.partition}"
        global_cluster_arn = f"{arn}:rds::{stack.account}:global-cluster:{global_cluster_id}"
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["rds:DescribeGlobalClusters"], resources=[global_cluster_arn])
        )
        # FailoverGlobalCluster authorizes the global cluster and DB clusters (Service Authorization
        # Reference, list_amazonrds.html); AWS's sample policy for a Region switch names the global
        # cluster and every member cluster, the writer being left as well as the target
        # (https://docs.aws.amazon.com/r53recovery/latest/dg/security_iam_region_switch_aurora.html).
        # `member_clusters` maps each region of the global database to its cluster identifier.
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["rds:FailoverGlobalCluster"],
                resources=[
                    global_cluster_arn,
                    *(
                        f"{arn}:rds:{region}:{stack.account}:cluster:{cluster}"
                        for region, cluster in sorted(member_clusters.items())
                    ),
                ],
            )
        )
        if valkey_global_id is not None:
            function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=[
                        "elasticache:DescribeGlobalReplicationGroups",
                        "elasticache:FailoverGlobalReplicationGroup",
                    ],
                    resources=[
                        f"{arn}:elasticache::{stack.account}:globalreplicationgroup:{valkey_global_id}",
                        f"{arn}:elasticache:{stack.region}:{stack.account}:replicationgroup:{valkey_group_id}",
                    ],
                )
            )
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
            )
        )
        acknowledge(
            function,
            [
                {
                    "id": wildcard("Resource::*"),
                    "reason": "cloudwatch:PutMetricData supports no resource ARN; it is limited to "
                    "the failover namespace by condition.",
                }
            ],
        )
        self.schedule = events.Rule(
            self,
            "Probe",
            description="Probe the primary region's health from this region every minute",
            schedule=events.Schedule.rate(Duration.minutes(1)),
            targets=[targets.LambdaFunction(function, retry_attempts=0)],
        )
        self.alarm = cw.Alarm(
            self,
            "PrimaryDown",
            alarm_description=f"chatstack PrimaryDown: {primary_region} unreachable from here; "
            "promotes this region",
            metric=cw.Metric(
                namespace=NAMESPACE,
                metric_name=METRIC,
                dimensions_map={"PrimaryRegion": primary_region},
                statistic="Maximum",
                period=Duration.minutes(1),
            ),
            threshold=1,
            comparison_operator=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=probe_failures,
            datapoints_to_alarm=probe_failures,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        self.alarm.add_alarm_action(actions.LambdaAction(function))
        self.alarm.add_alarm_action(actions.SnsAction(topic))
        self.alarm.add_ok_action(actions.SnsAction(topic))
