"""`chatstack region`: the switchover/failover/status plans and the CLI's refusals.

Every planned call is checked against botocore's own service model (the documented API contract:
operation names, required members, types), so a plan that AWS would reject fails here, offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator
from click.testing import CliRunner, Result

from cdk.config import DeploymentConfig, load_config
from chatstack.cli import main
from chatstack.commands.region_plan import (
    Call,
    RegionError,
    aurora_is_writer,
    aurora_writer_region,
    dry_run_targets,
    health_summary,
    plan_move,
    plan_status,
    resolve_targets,
    valkey_is_primary,
    valkey_primary_region,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "cdk.config.example.json"
OUTPUTS = {
    "chatstack-us-east-1-routing": {"HealthCheckId": "11111111-2222-3333-4444-555555555555"},
    "chatstack-us-west-2-routing": {"HealthCheckId": "66666666-7777-8888-9999-000000000000"},
}


def example(**overrides: Any) -> DeploymentConfig:
    return load_config({"config": str(EXAMPLE), "chatstack": overrides}, ROOT)


def live_like_targets(config: DeploymentConfig) -> Any:
    return resolve_targets(config, OUTPUTS, valkey_global_id="ldgnf-chatstack-valkey")


def contract_errors(call: Call) -> str:
    model = botocore.session.get_session().get_service_model(call.service)
    assert call.operation in model.operation_names, call.operation
    report = ParamValidator().validate(call.parameters, model.operation_model(call.operation).input_shape)
    return report.generate_report() if report.has_errors() else ""


def every_plan(config: DeploymentConfig) -> list[Call]:
    calls = plan_status(config, live_like_targets(config))
    for kind in ("switchover", "failover"):
        for targets in (live_like_targets(config), dry_run_targets(config, {})):
            calls += plan_move(config, targets, kind=kind, to="us-west-2", current="us-east-1")
            calls += plan_move(config, targets, kind=kind, to="us-east-1", current="us-west-2")
    return calls


@pytest.mark.parametrize(
    "overrides",
    [{}, {"routing_policy": "latency"}, {"domain_name": None, "hosted_zone_id": None}],
    ids=["failover-routing", "latency-routing", "no-domain"],
)
def test_every_planned_call_satisfies_the_botocore_service_model(overrides: dict[str, Any]) -> None:
    calls = every_plan(example(**overrides))
    assert calls
    for call in calls:
        assert contract_errors(call) == "", (call, contract_errors(call))


def test_switchover_of_the_example_moves_aurora_then_valkey_then_traffic() -> None:
    config = example()
    calls = plan_move(
        config, live_like_targets(config), kind="switchover", to="us-west-2", current="us-east-1"
    )
    assert [(c.service, c.operation) for c in calls] == [
        ("rds", "SwitchoverGlobalCluster"),
        ("rds", "DescribeGlobalClusters"),
        ("elasticache", "FailoverGlobalReplicationGroup"),
        ("elasticache", "DescribeGlobalReplicationGroups"),
        ("route53", "UpdateHealthCheck"),
    ]
    arn = "arn:aws:rds:us-west-2:111111111111:cluster:chatstack-aurora-us-west-2"
    assert calls[0].parameters == {
        "GlobalClusterIdentifier": "chatstack-global",
        "TargetDbClusterIdentifier": arn,
    }
    assert calls[1].until is not None and calls[1].until.expect == arn and calls[1].until.timeout_s <= 1800
    assert calls[2].parameters == {
        "GlobalReplicationGroupId": "ldgnf-chatstack-valkey",
        "PrimaryRegion": "us-west-2",
        "PrimaryReplicationGroupId": "chatstack-valkey",
    }
    assert calls[4].parameters == {
        "HealthCheckId": OUTPUTS["chatstack-us-east-1-routing"]["HealthCheckId"],
        "Inverted": True,
    }
    # Calls go to the target region: the region being left may be the one that is down.
    assert {c.region for c in calls} == {"us-west-2"}


def test_failover_allows_data_loss_and_pins_traffic_away_from_the_failed_region() -> None:
    config = example()
    calls = plan_move(config, live_like_targets(config), kind="failover", to="us-west-2", current="us-east-1")
    assert calls[0].operation == "FailoverGlobalCluster" and calls[0].parameters["AllowDataLoss"] is True
    assert calls[-1].operation == "UpdateHealthCheck" and calls[-1].parameters["Inverted"] is True


def test_switching_back_to_the_configured_primary_stops_inverting_its_health_check() -> None:
    config = example()
    calls = plan_move(
        config, live_like_targets(config), kind="switchover", to="us-east-1", current="us-west-2"
    )
    assert calls[-1].parameters == {
        "HealthCheckId": OUTPUTS["chatstack-us-east-1-routing"]["HealthCheckId"],
        "Inverted": False,
    }


def test_latency_routing_moves_only_the_aurora_writer() -> None:
    config = example(routing_policy="latency")
    calls = plan_move(
        config, live_like_targets(config), kind="switchover", to="us-west-2", current="us-east-1"
    )
    assert {c.service for c in calls} == {"rds"}


def test_a_plan_to_the_region_already_writing_or_outside_the_deployment_is_refused() -> None:
    config = example()
    with pytest.raises(RegionError, match="already holds the Aurora writer"):
        plan_move(config, live_like_targets(config), kind="switchover", to="us-east-1", current="us-east-1")
    with pytest.raises(RegionError, match="not one of this deployment's regions"):
        plan_move(config, live_like_targets(config), kind="failover", to="eu-west-1", current="us-east-1")


def test_response_readers_follow_the_documented_shapes() -> None:
    arn = "arn:aws:rds:us-west-2:111111111111:cluster:chatstack-aurora-us-west-2"
    old_arn = "arn:aws:rds:us-east-1:111111111111:cluster:chatstack-aurora-us-east-1"
    clusters = {
        "GlobalClusters": [
            {
                "Status": "switching-over",
                "GlobalClusterMembers": [
                    {
                        "DBClusterArn": old_arn,
                        "IsWriter": False,
                    },
                    {"DBClusterArn": arn, "IsWriter": True},
                ],
            }
        ]
    }
    assert aurora_writer_region(clusters) == "us-west-2"
    assert not aurora_is_writer(clusters, arn)
    clusters["GlobalClusters"][0]["Status"] = "available"
    assert aurora_is_writer(clusters, arn)
    groups = {
        "GlobalReplicationGroups": [
            {
                "Members": [
                    {"ReplicationGroupRegion": "us-east-1", "Role": "SECONDARY", "Status": "associated"},
                    {"ReplicationGroupRegion": "us-west-2", "Role": "PRIMARY", "Status": "associating"},
                ]
            }
        ]
    }
    assert valkey_primary_region(groups) == "us-west-2"
    assert not valkey_is_primary(groups, "us-west-2")
    groups["GlobalReplicationGroups"][0]["Members"][1]["Status"] = "associated"
    assert valkey_is_primary(groups, "us-west-2")
    observations = {
        "HealthCheckObservations": [
            {"Region": "us-east-1", "StatusReport": {"Status": "Success: HTTP Status Code 200, OK"}},
            {"Region": "eu-west-1", "StatusReport": {"Status": "Failure: Connection timed out."}},
            {"Region": "ap-southeast-1", "StatusReport": {"Status": "Success: HTTP Status Code 200, OK"}},
        ]
    }
    check = {"HealthCheck": {"HealthCheckConfig": {"Inverted": True}}}
    assert health_summary(check, observations).startswith("healthy, 2/3 checkers see success (inverted")


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    # Without this botocore would wait on the EC2 instance metadata service before giving up.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["region", *args, "--config", str(EXAMPLE)])


def one_sentence_failure(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    message = result.stderr.strip()
    assert "\n" not in message and message.endswith("."), message
    return message


@pytest.mark.usefixtures("no_aws_credentials")
def test_dry_run_prints_the_plan_as_json_lines_without_credentials() -> None:
    result = run("switchover", "--to", "us-west-2", "--dry-run")
    assert result.exit_code == 0, result.output
    steps = [json.loads(line) for line in result.stdout.splitlines()]
    assert steps[0]["operation"] == "SwitchoverGlobalCluster"
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    assert {"service", "region", "operation", "parameters"} <= set(steps[0])
    assert "RPO 0" in result.stderr


@pytest.mark.usefixtures("no_aws_credentials")
def test_dry_run_failover_and_status_need_no_confirmation_and_no_credentials(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(OUTPUTS), encoding="utf-8")
    result = run("failover", "--to", "us-west-2", "--dry-run", "--outputs", str(outputs))
    assert result.exit_code == 0, result.output
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["parameters"]["HealthCheckId"] == OUTPUTS["chatstack-us-east-1-routing"]["HealthCheckId"]
    status = run("status", "--dry-run")
    assert status.exit_code == 0 and "DescribeGlobalClusters" in status.stdout


@pytest.mark.usefixtures("no_aws_credentials")
def test_without_credentials_a_real_run_stops_with_one_sentence() -> None:
    assert "No AWS credentials" in one_sentence_failure(run("switchover", "--to", "us-west-2", "--yes"))
    assert "No AWS credentials" in one_sentence_failure(run("status"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("switchover", "--to", "xx-nowhere-1", "--dry-run"), "not a known AWS region"),
        (("switchover", "--to", "eu-west-1", "--dry-run"), "not one of this deployment's regions"),
        (("switchover", "--to", "us-east-1", "--dry-run"), "already holds the Aurora writer"),
        (("failover", "--to", "us-west-2"), "--yes"),
        (("failover", "--to", "us-west-2", "--from", "mars-1", "--dry-run"), "not a known AWS region"),
    ],
)
@pytest.mark.usefixtures("no_aws_credentials")
def test_bad_input_gets_one_sentence_and_exit_status_2(args: tuple[str, ...], expected: str) -> None:
    assert expected in one_sentence_failure(run(*args))


def test_a_missing_config_file_gets_one_sentence(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["region", "status", "--dry-run", "--config", str(tmp_path / "absent.json")]
    )
    assert "does not exist" in one_sentence_failure(result)


@pytest.mark.usefixtures("no_aws_credentials")
@pytest.mark.parametrize("value", [None, "", {"a": 1}])
def test_an_outputs_file_value_that_is_not_a_string_is_refused_before_any_plan(
    tmp_path: Path, value: Any
) -> None:
    """`null` became the id "None" in UpdateHealthCheck, and "" a plan without its traffic step."""
    outputs = tmp_path / "outputs.json"
    bad = {"chatstack-us-east-1-routing": {"HealthCheckId": value}}
    outputs.write_text(json.dumps(bad), encoding="utf-8")
    result = run("failover", "--to", "us-west-2", "--dry-run", "--outputs", str(outputs))
    assert "HealthCheckId is not a non-empty string" in one_sentence_failure(result)


@pytest.mark.parametrize("content", [b"\xe9t\xe9", None], ids=["latin-1", "directory"])
def test_an_unreadable_config_gets_one_sentence(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "config.json"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    result = CliRunner().invoke(main, ["region", "status", "--dry-run", "--config", str(path)])
    assert "config.json" in one_sentence_failure(result)


def test_a_one_region_dry_run_lists_no_global_datastore_call() -> None:
    """A one-region deployment founds no Global Datastore (cdk/stacks/data.py); the dry run listed a
    DescribeGlobalReplicationGroups that the live run never makes."""
    dev = str(ROOT / "cdk.config.dev.json")
    result = CliRunner().invoke(main, ["region", "status", "--dry-run", "--config", dev])
    assert result.exit_code == 0, result.output
    assert "GlobalReplicationGroup" not in result.stdout and "DescribeGlobalClusters" in result.stdout


@pytest.mark.usefixtures("no_aws_credentials")
def test_status_when_aws_does_not_answer_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator runs it during an incident: the lookups before the status raised a traceback."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = run("status")
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]  # after a note per output it could not read
    assert last.startswith("AWS did not answer") and "Traceback" not in result.output
