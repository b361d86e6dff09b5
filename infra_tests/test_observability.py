"""Dashboards, alarms, the budget and the cost-allocation tags."""

from __future__ import annotations

import json
from functools import cache

from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

from cdk import service_metrics as sm
from cdk.stacks.deployment import UNTAGGABLE
from infra_tests.conftest import Synth
from infra_tests.helpers import render


def _body(dashboard: dict) -> str:
    return render(dashboard["Properties"]["DashboardBody"])


def test_each_region_has_an_operations_dashboard_covering_the_service(synth: Synth) -> None:
    for region in synth.config.regions:
        (dashboard,) = synth.resources(
            synth.stack(region, "observability"), "AWS::CloudWatch::Dashboard"
        ).values()
        assert dashboard["Properties"]["DashboardName"] == f"{synth.config.name}-ops-{region}"
        body = _body(dashboard)
        for metric in (
            "ConnectCount",
            "MessageCount",
            sm.TIME_TO_FIRST_TOKEN,
            sm.OUTPUT_TOKENS,
            "PERIOD(tokens)",
            "Errors",
            "Throttles",
            "ApproximateAgeOfOldestMessage",
            "ApproximateNumberOfMessagesVisible",
            "ConcurrentRequestsPerModel",
            "GPUUtilization",
            "AuroraGlobalDBReplicationLag",
            "EngineCPUUtilization",
        ):
            assert metric in body, (region, metric)


def test_the_finance_dashboard_shows_tokens_dollars_gpu_hours_and_budget_for_every_region(
    synth: Synth,
) -> None:
    finance = synth.templates[f"{synth.config.name}-{synth.config.primary_region}-finance"]
    (dashboard,) = synth.resources(finance, "AWS::CloudWatch::Dashboard").values()
    body = json.loads(_body(dashboard))
    text = json.dumps(body)
    for region in synth.config.regions:
        assert f"instance-hours {region}" in text and f"$ {synth.config.model_profile} {region}" in text
        assert f"$ per 1k output tokens {synth.config.model_profile} {region}" in text
    for metric in (sm.INPUT_TOKENS, sm.OUTPUT_TOKENS, "EstimatedCharges"):
        assert metric in text
    assert str(synth.config.profile.instance_price_per_hour_usd) in text
    assert any(
        a.get("value") == synth.config.monthly_budget_usd
        for w in body["widgets"]
        for a in w["properties"].get("annotations", {}).get("horizontal", [])
    )


def test_the_budget_watches_this_deployments_tag_and_notifies(synth: Synth) -> None:
    finance = synth.templates[f"{synth.config.name}-{synth.config.primary_region}-finance"]
    (budget,) = synth.resources(finance, "AWS::Budgets::Budget").values()
    data = budget["Properties"]["Budget"]
    assert data["BudgetLimit"] == {"Amount": synth.config.monthly_budget_usd, "Unit": "USD"}
    assert data["CostFilters"]["TagKeyValue"] == [f"user:chatstack:deployment${synth.config.name}"]
    kinds = {
        n["Notification"]["NotificationType"] for n in budget["Properties"]["NotificationsWithSubscribers"]
    }
    assert kinds == {"ACTUAL", "FORECASTED"}


def test_every_alarm_notifies_the_regions_alarm_topic(synth: Synth) -> None:
    for region in synth.config.regions:
        observability = synth.stack(region, "observability")
        (topic_id,) = synth.resources(observability, "AWS::SNS::Topic")
        alarms = synth.resources(observability, "AWS::CloudWatch::Alarm").values()
        assert {a["Properties"]["AlarmDescription"] for a in alarms} >= {
            "chatstack DeadLetters",
            "chatstack QueueBacklog",
        }
        for alarm in alarms:
            # The failover alarm also invokes the promotion function (test_failover).
            assert {"Ref": topic_id} in alarm["Properties"]["AlarmActions"]
        lag = [a for a in alarms if a["Properties"]["MetricName"] == "AuroraGlobalDBReplicationLag"]
        # A secondary's replication lag is the RPO a failover would give: it is watched there.
        assert len(lag) == (0 if synth.config.is_primary(region) else 1), region


CROSS_REGION_PROVIDERS = (
    "CustomCrossRegionExportWriterCustomResourceProvider",
    "CustomCrossRegionExportReaderCustomResourceProvider",
)


@cache
def _taggable(resource_type: str, region: str) -> bool:
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema(region, resource_type).schema
    return "Tags" in schema.get("properties", {})


def test_every_taggable_resource_carries_the_cost_allocation_tags(synth: Synth) -> None:
    untagged = []
    for name, template in synth.templates.items():
        for logical_id, resource in template["Resources"].items():
            kind = resource["Type"]
            if kind.startswith("Custom::") or kind in UNTAGGABLE or not _taggable(kind, "us-east-1"):
                continue
            # CDK adds the cross-region reference providers while resolving references, after every
            # aspect (tags included) has run; they are a role and a function run only during deploys.
            if logical_id.startswith(CROSS_REGION_PROVIDERS):
                continue
            tags = resource.get("Properties", {}).get("Tags")
            text = json.dumps(tags)
            if "chatstack:deployment" not in text:
                untagged.append((name, logical_id, kind))
    assert untagged == []
