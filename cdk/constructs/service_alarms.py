"""Alarms that page the operators: dead letters, queue backlog, worker and endpoint errors, data tier."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk.constructs.lmi_endpoint import VARIANT


class ServiceAlarms(Construct):
    """`alarms[name]`, each notifying the alarm topic on ALARM and OK."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        topic: sns.ITopic,
        worker: lambda_.IFunction,
        queue: sqs.IQueue,
        dead_letters: sqs.IQueue,
        endpoint_name: str,
        db_cluster_id: str,
        global_replica: bool = False,
    ) -> None:
        """`global_replica`: this region's Aurora cluster is a Global Database secondary, so its
        replication lag (the RPO of a failover) gets an alarm too."""
        super().__init__(scope, id)
        minute = Duration.minutes(1)
        endpoint = {"EndpointName": endpoint_name, "VariantName": VARIANT}
        specs: dict[str, tuple[cw.IMetric, float, int]] = {
            "DeadLetters": (
                dead_letters.metric_approximate_number_of_messages_visible(
                    period=minute, statistic="Maximum"
                ),
                1,
                1,
            ),
            "QueueBacklog": (
                queue.metric_approximate_age_of_oldest_message(period=minute, statistic="Maximum"),
                60,
                3,
            ),
            "WorkerErrors": (worker.metric_errors(period=minute), 5, 3),
            "WorkerThrottles": (worker.metric_throttles(period=minute), 1, 3),
            "EndpointErrors": (
                cw.Metric(
                    namespace="AWS/SageMaker",
                    metric_name="Invocation5XXErrors",
                    dimensions_map=endpoint,
                    statistic="Sum",
                    period=minute,
                ),
                5,
                3,
            ),
            "AuroraCpu": (
                cw.Metric(
                    namespace="AWS/RDS",
                    metric_name="CPUUtilization",
                    dimensions_map={"DBClusterIdentifier": db_cluster_id},
                    statistic="Maximum",
                    period=Duration.minutes(5),
                ),
                85,
                3,
            ),
        }
        if global_replica:
            # Milliseconds, reported by the secondary cluster (Aurora User Guide, "Monitoring an Aurora
            # global database"); over 5 s for 3 minutes means a failover now would lose that much.
            specs["GlobalReplicationLag"] = (
                cw.Metric(
                    namespace="AWS/RDS",
                    metric_name="AuroraGlobalDBReplicationLag",
                    dimensions_map={"DBClusterIdentifier": db_cluster_id},
                    statistic="Maximum",
                    period=minute,
                ),
                5000,
                3,
            )
        self.alarms: dict[str, cw.Alarm] = {}
        for name, (metric, threshold, periods) in specs.items():
            alarm = cw.Alarm(
                self,
                name,
                metric=metric,
                threshold=threshold,
                evaluation_periods=periods,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                alarm_description=f"chatstack {name}",
            )
            alarm.add_alarm_action(actions.SnsAction(topic))
            alarm.add_ok_action(actions.SnsAction(topic))
            self.alarms[name] = alarm
