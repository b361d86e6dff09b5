"""Automatic regional failover, deployed in each secondary region (cdk/constructs/automatic_failover.py).

Two events reach it:
- a schedule, every minute: GET the primary region's deep `/healthz` (what Route 53 checks there)
  from this region and publish `Chatstack/Failover PrimaryHealthy` 1 or 0;
- a CloudWatch alarm on that metric (N failed minutes in a row) entering ALARM: promote this region.
  Aurora with FailoverGlobalCluster (AllowDataLoss: the primary is unreachable, so the lag is lost)
  and Valkey with FailoverGlobalReplicationGroup, each only when this region is not already the
  writer, so a repeated alarm does nothing twice. Route 53 has moved clients here already (this
  region's `/readyz` passes while the primary's `/healthz` fails); promotion restores writes.

Contracts: the alarm's Lambda action event (`source` "aws.cloudwatch", `alarmData.state.value`),
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html#alarms-and-actions-Lambda;
FailoverGlobalCluster, https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_FailoverGlobalCluster.html;
FailoverGlobalReplicationGroup,
https://docs.aws.amazon.com/AmazonElastiCache/latest/APIReference/API_FailoverGlobalReplicationGroup.html.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.config import Settings, get_settings
from lambdas.observability import logger

NAMESPACE = "Chatstack/Failover"
METRIC = "PrimaryHealthy"
Clients = Callable[[str], Any]


def probe(url: str, timeout_s: float) -> bool:
    """True when the primary's health route answers 2xx within the timeout."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def record_probe(settings: Settings, clients: Clients) -> bool:
    healthy = probe(settings.failover_probe_url, settings.failover_probe_timeout_s)
    clients("cloudwatch").put_metric_data(
        Namespace=NAMESPACE,
        MetricData=[
            {
                "MetricName": METRIC,
                "Dimensions": [{"Name": "PrimaryRegion", "Value": settings.failover_primary_region}],
                "Value": 1.0 if healthy else 0.0,
                "Unit": "Count",
            }
        ],
    )
    return healthy


def promote(settings: Settings, clients: Clients) -> list[str]:
    """Make this region the writer of Aurora and Valkey; the names of the calls made."""
    done: list[str] = []
    rds = clients("rds")
    (cluster,) = rds.describe_global_clusters(GlobalClusterIdentifier=settings.failover_global_cluster_id)[
        "GlobalClusters"
    ]
    writers = [m["DBClusterArn"] for m in cluster["GlobalClusterMembers"] if m.get("IsWriter")]
    if writers != [settings.failover_cluster_arn]:
        rds.failover_global_cluster(
            GlobalClusterIdentifier=settings.failover_global_cluster_id,
            TargetDbClusterIdentifier=settings.failover_cluster_arn,
            AllowDataLoss=True,
        )
        done.append("FailoverGlobalCluster")
    if settings.failover_valkey_global_id:
        elasticache = clients("elasticache")
        (group,) = elasticache.describe_global_replication_groups(
            GlobalReplicationGroupId=settings.failover_valkey_global_id, ShowMemberInfo=True
        )["GlobalReplicationGroups"]
        primary = [m for m in group["Members"] if m.get("Role") == "PRIMARY"]
        if not primary or primary[0]["ReplicationGroupRegion"] != settings.region:
            elasticache.failover_global_replication_group(
                GlobalReplicationGroupId=settings.failover_valkey_global_id,
                PrimaryRegion=settings.region,
                PrimaryReplicationGroupId=settings.failover_valkey_group_id,
            )
            done.append("FailoverGlobalReplicationGroup")
    return done


def handle(event: dict[str, Any], settings: Settings, clients: Clients) -> dict[str, Any]:
    if event.get("source") == "aws.cloudwatch" and "alarmData" in event:
        state = str(((event.get("alarmData") or {}).get("state") or {}).get("value", ""))
        if state != "ALARM":
            return {"promoted": []}
        done = promote(settings, clients)
        logger.warning("primary region unreachable: promoted this region", extra={"calls": done})
        return {"promoted": done}
    return {"primaryHealthy": record_probe(settings, clients)}


def _boto3_clients(region: str) -> Clients:
    import boto3

    return lambda service: boto3.client(service, region_name=region)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = get_settings()
    return handle(event, settings, _boto3_clients(settings.region))
