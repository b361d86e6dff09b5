"""Automatic failover as synthesized: each secondary probes the primary every minute and promotes itself
when an alarm on that probe fires (cdk/constructs/automatic_failover.py, lambdas/handlers/failover.py)."""

from __future__ import annotations

from typing import Any

from cdk.constructs.chat_functions import lambda_handler_path
from infra_tests.conftest import Synth
from infra_tests.helpers import as_list, referenced_ids, render, statements
from lambdas import wiring
from lambdas.handlers.failover import METRIC, NAMESPACE


def _failover_function(synth: Synth, region: str) -> tuple[str, dict[str, Any]] | None:
    template = synth.stack(region, "observability")
    found = [
        (k, v["Properties"])
        for k, v in synth.resources(template, "AWS::Lambda::Function").items()
        if v["Properties"].get("Handler") == lambda_handler_path(wiring.FAILOVER)
    ]
    return found[0] if found else None


def test_only_secondaries_run_the_failover_function_outside_the_vpc(synth: Synth) -> None:
    assert synth.config.automatic_failover
    for region in synth.config.regions:
        found = _failover_function(synth, region)
        if synth.config.is_primary(region):
            assert found is None
            continue
        assert found is not None, region
        _, props = found
        assert "VpcConfig" not in props, "the probe must not depend on this region's NAT gateways"
        env = props["Environment"]["Variables"]
        assert env["CHATSTACK_FAILOVER_PRIMARY_REGION"] == synth.config.primary_region
        assert env["CHATSTACK_FAILOVER_GLOBAL_CLUSTER_ID"] == synth.config.physical_name("global")
        assert render(env["CHATSTACK_FAILOVER_CLUSTER_ARN"]).endswith(
            f":rds:{region}:{synth.config.account}:cluster:{synth.config.physical_name('aurora', region)}"
        )
        assert env["CHATSTACK_FAILOVER_VALKEY_GROUP_ID"] == synth.config.physical_name("valkey")
        assert env["CHATSTACK_FAILOVER_PROBE_URL"]["Fn::GetAtt"][1] == "Parameter.Value"


def test_a_minutely_probe_and_an_alarm_that_invokes_the_promotion(synth: Synth) -> None:
    for region in synth.config.secondary_regions:
        template = synth.stack(region, "observability")
        found = _failover_function(synth, region)
        assert found is not None
        function_id, _ = found
        (rule,) = synth.resources(template, "AWS::Events::Rule").values()
        assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
        assert referenced_ids(rule["Properties"]["Targets"]) == {function_id}
        (alarm,) = [
            a["Properties"]
            for a in synth.resources(template, "AWS::CloudWatch::Alarm").values()
            if a["Properties"].get("MetricName") == METRIC
        ]
        assert alarm["Namespace"] == NAMESPACE
        assert alarm["ComparisonOperator"] == "LessThanThreshold" and alarm["Threshold"] == 1
        assert alarm["EvaluationPeriods"] == synth.config.failover.probe_failures
        assert alarm["TreatMissingData"] == "notBreaching", "a broken probe must never promote"
        assert function_id in referenced_ids(alarm["AlarmActions"])


def test_the_failover_function_may_promote_only_this_deployments_members(synth: Synth) -> None:
    account = synth.config.account
    for region in synth.config.secondary_regions:
        template = synth.stack(region, "observability")
        found = _failover_function(synth, region)
        assert found is not None
        _, props = found
        role_id = props["Role"]["Fn::GetAtt"][0]
        granted: dict[str, set[str]] = {}
        for policy in synth.resources(template, "AWS::IAM::Policy").values():
            if {"Ref": role_id} not in policy["Properties"]["Roles"]:
                continue
            for statement in statements(policy):
                for action in as_list(statement["Action"]):
                    granted.setdefault(action, set()).update(
                        render(r) for r in as_list(statement["Resource"])
                    )
        # FailoverGlobalCluster is authorized on the global cluster and on DB clusters; AWS's sample
        # policy names every member, the writer being demoted (the primary) as well as the target:
        # https://docs.aws.amazon.com/r53recovery/latest/dg/security_iam_region_switch_aurora.html
        # (resource types: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonrds.html).
        assert granted["rds:FailoverGlobalCluster"] == {
            f"arn:aws:rds::{account}:global-cluster:{synth.config.physical_name('global')}",
            *(
                f"arn:aws:rds:{member}:{account}:cluster:{synth.config.physical_name('aurora', member)}"
                for member in synth.config.regions
            ),
        }
        assert granted["rds:DescribeGlobalClusters"] == {
            f"arn:aws:rds::{account}:global-cluster:{synth.config.physical_name('global')}"
        }
        (valkey,) = [
            r for r in granted["elasticache:FailoverGlobalReplicationGroup"] if ":replicationgroup:" in r
        ]
        valkey_group = synth.config.physical_name("valkey")
        assert valkey == f"arn:aws:elasticache:{region}:{account}:replicationgroup:{valkey_group}"
        assert granted["cloudwatch:PutMetricData"] == {"*"}
