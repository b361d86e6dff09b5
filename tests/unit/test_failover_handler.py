"""The secondary region's failover function (lambdas/handlers/failover.py): probes the primary's health
over real HTTP and, when its alarm fires, promotes this region through boto3 exactly as in the cloud,
against botocore's Stubber. Contracts checked: the CloudWatch alarm Lambda action event
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html), RDS
DescribeGlobalClusters/FailoverGlobalCluster and ElastiCache DescribeGlobalReplicationGroups/
FailoverGlobalReplicationGroup (botocore's service models validate every request and response)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from lambdas.config import Settings
from lambdas.handlers.failover import METRIC, NAMESPACE, handle

HERE, PRIMARY = "us-west-2", "us-east-1"
CLUSTER_ARN = f"arn:aws:rds:{HERE}:111111111111:cluster:chatstack-aurora-{HERE}"
PRIMARY_ARN = f"arn:aws:rds:{PRIMARY}:111111111111:cluster:chatstack-aurora-{PRIMARY}"
ALARM = {
    "source": "aws.cloudwatch",
    "alarmArn": f"arn:aws:cloudwatch:{HERE}:111111111111:alarm:chatstack-primary-down",
    "accountId": "111111111111",
    "time": "2026-11-29T05:00:00.000+0000",
    "region": HERE,
    "alarmData": {
        "alarmName": "chatstack-primary-down",
        "state": {"value": "ALARM", "reason": "Threshold", "timestamp": "2026-11-29T05:00:00.000+0000"},
        "previousState": {"value": "OK", "reason": "", "timestamp": "2026-11-29T04:00:00.000+0000"},
        "configuration": {"description": "primary unreachable", "metrics": []},
    },
}


class Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def health() -> Iterator[tuple[str, type[Health]]]:
    handler = type("H", (Health,), {"status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/healthz", handler
    finally:
        server.shutdown()


def settings(url: str = "http://127.0.0.1:9/healthz") -> Settings:
    return Settings(
        environment="test",
        region=HERE,
        failover_primary_region=PRIMARY,
        failover_probe_url=url,
        failover_probe_timeout_s=2,
        failover_global_cluster_id="chatstack-global",
        failover_cluster_arn=CLUSTER_ARN,
        failover_valkey_global_id="ldgnf-chatstack-valkey",
        failover_valkey_group_id="chatstack-valkey",
    )


class Clients:
    def __init__(self) -> None:
        self.clients = {s: boto3.client(s, region_name=HERE, aws_access_key_id="x", aws_secret_access_key="x")
                        for s in ("cloudwatch", "rds", "elasticache")}
        self.stubs = {s: Stubber(c) for s, c in self.clients.items()}
        for stub in self.stubs.values():
            stub.activate()

    def __call__(self, service: str) -> Any:
        return self.clients[service]

    def done(self) -> None:
        for stub in self.stubs.values():
            stub.assert_no_pending_responses()


def expect_metric(clients: Clients, value: float) -> None:
    clients.stubs["cloudwatch"].add_response("put_metric_data", {}, {
        "Namespace": NAMESPACE,
        "MetricData": [{"MetricName": METRIC, "Dimensions": [{"Name": "PrimaryRegion", "Value": PRIMARY}],
                        "Value": value, "Unit": "Count"}],
    })


def global_state(clients: Clients, *, writer: str, valkey_primary: str) -> None:
    clients.stubs["rds"].add_response(
        "describe_global_clusters",
        {"GlobalClusters": [{"GlobalClusterIdentifier": "chatstack-global", "GlobalClusterMembers": [
            {"DBClusterArn": PRIMARY_ARN, "IsWriter": writer == PRIMARY},
            {"DBClusterArn": CLUSTER_ARN, "IsWriter": writer == HERE},
        ]}]},
        {"GlobalClusterIdentifier": "chatstack-global"},
    )
    clients.stubs["elasticache"].add_response(
        "describe_global_replication_groups",
        {"GlobalReplicationGroups": [{"GlobalReplicationGroupId": "ldgnf-chatstack-valkey", "Members": [
            {"ReplicationGroupId": "chatstack-valkey", "ReplicationGroupRegion": PRIMARY,
             "Role": "PRIMARY" if valkey_primary == PRIMARY else "SECONDARY"},
            {"ReplicationGroupId": "chatstack-valkey", "ReplicationGroupRegion": HERE,
             "Role": "PRIMARY" if valkey_primary == HERE else "SECONDARY"},
        ]}]},
        {"GlobalReplicationGroupId": "ldgnf-chatstack-valkey", "ShowMemberInfo": True},
    )


def test_a_healthy_primary_is_recorded_as_1(health: tuple[str, type[Health]]) -> None:
    url, _ = health
    clients = Clients()
    expect_metric(clients, 1.0)
    assert handle({"source": "aws.events", "detail-type": "Scheduled Event"}, settings(url), clients) == {
        "primaryHealthy": True
    }
    clients.done()


def test_a_failing_or_unreachable_primary_is_recorded_as_0(health: tuple[str, type[Health]]) -> None:
    url, handler = health
    handler.status = 503
    clients = Clients()
    expect_metric(clients, 0.0)
    assert handle({"source": "aws.events"}, settings(url), clients) == {"primaryHealthy": False}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/healthz"
    expect_metric(clients, 0.0)
    assert handle({"source": "aws.events"}, settings(closed), clients) == {"primaryHealthy": False}
    clients.done()


def test_the_alarm_promotes_aurora_and_valkey_to_this_region() -> None:
    clients = Clients()
    global_state(clients, writer=PRIMARY, valkey_primary=PRIMARY)
    clients.stubs["rds"].add_response("failover_global_cluster", {}, {
        "GlobalClusterIdentifier": "chatstack-global", "TargetDbClusterIdentifier": CLUSTER_ARN,
        "AllowDataLoss": True,
    })
    clients.stubs["elasticache"].add_response("failover_global_replication_group", {}, {
        "GlobalReplicationGroupId": "ldgnf-chatstack-valkey", "PrimaryRegion": HERE,
        "PrimaryReplicationGroupId": "chatstack-valkey",
    })
    # The order of the stubbed responses is the order of the calls: describe, then fail over, per service.
    assert handle(ALARM, settings(), clients) == {
        "promoted": ["FailoverGlobalCluster", "FailoverGlobalReplicationGroup"]
    }
    clients.done()


def test_a_repeated_alarm_after_promotion_changes_nothing() -> None:
    clients = Clients()
    global_state(clients, writer=HERE, valkey_primary=HERE)
    assert handle(ALARM, settings(), clients) == {"promoted": []}
    clients.done()


def test_an_alarm_returning_to_ok_calls_nothing() -> None:
    clients = Clients()
    ok = {**ALARM, "alarmData": {**ALARM["alarmData"], "state": {"value": "OK"}}}  # type: ignore[dict-item]
    assert handle(ok, settings(), clients) == {"promoted": []}
    clients.done()
