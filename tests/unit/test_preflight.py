"""`chatstack preflight` against botocore Stubber: real boto3 clients whose requests and canned responses
botocore validates against its bundled service models (STS GetCallerIdentity, Service Quotas
ListServiceQuotas/GetServiceQuota, EC2 DescribeAddresses/DescribeVpcs, OpenSearch Serverless
GetAccountSettings, CloudFormation DescribeStacks, S3 ListObjectsV2), so a wrong parameter name or a
response shape AWS never sends fails here. One line per check; exit status 1 when any check fails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner

from cdk.config import DeploymentConfig, parse_config
from chatstack.commands import preflight as pf

ROOT = Path(__file__).parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "models-123456789012-us-east-1"


def config_data() -> dict[str, Any]:
    data = json.loads((ROOT / "cdk.config.example.json").read_text())
    data.pop("$comment", None)
    data.update(account=ACCOUNT, vector_store="opensearch")
    data.setdefault("inference", {})["weights_s3_uri"] = "s3://models-{account}-{region}/llama/"
    return dict(data)


class Stubs:
    """One real client per (service, region), each with an activated Stubber."""

    def __init__(self) -> None:
        self.clients: dict[tuple[str, str], Any] = {}
        self.stubbers: dict[tuple[str, str], Stubber] = {}

    def __call__(self, service: str, region: str) -> Any:
        if (service, region) not in self.clients:
            client = boto3.client(service, region_name=region, aws_access_key_id="x",
                                  aws_secret_access_key="x")
            self.clients[service, region] = client
            self.stubbers[service, region] = Stubber(client)
            self.stubbers[service, region].activate()
        return self.clients[service, region]

    def stub(self, service: str, region: str = REGION) -> Stubber:
        self(service, region)
        return self.stubbers[service, region]

    def assert_all_used(self) -> None:
        for stubber in self.stubbers.values():
            stubber.assert_no_pending_responses()


@pytest.fixture
def stubs() -> Iterator[Stubs]:
    s = Stubs()
    yield s
    s.assert_all_used()


def quota(name: str, value: float) -> dict[str, Any]:
    return {"ServiceCode": "sagemaker", "QuotaName": name, "QuotaCode": "L-0000000" + str(int(value) % 10),
            "Value": value, "Unit": "None", "Adjustable": True, "GlobalQuota": False}


def stub_account(
    stubs: Stubs, config: DeploymentConfig, *, endpoint_quota: float = 10,
    bootstrap: str | None = "UPDATE_COMPLETE", weights: list[str] | None = None, ocus: int | None = 10,
) -> None:
    stubs.stub("sts").add_response("get_caller_identity", {
        "Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:role/deploy", "UserId": "AROAEXAMPLE"})
    sq = stubs.stub("service-quotas")
    needed = pf.endpoint_instances(config)
    sq.add_response(
        "list_service_quotas",
        {"Quotas": [quota(f"{t} for endpoint usage", endpoint_quota) for t in needed]
         + [quota("ml.p5.48xlarge for endpoint usage", 0)]},
        {"ServiceCode": "sagemaker"},
    )
    sq.add_response("get_service_quota", {"Quota": {"QuotaName": "EC2-VPC Elastic IPs", "Value": 5.0}},
                    {"ServiceCode": "ec2", "QuotaCode": "L-0263D0A3"})
    ec2 = stubs.stub("ec2")
    ec2.add_response("describe_addresses", {"Addresses": [{"PublicIp": "203.0.113.7"}]}, {})
    sq.add_response("get_service_quota", {"Quota": {"QuotaName": "VPCs per Region", "Value": 5.0}},
                    {"ServiceCode": "vpc", "QuotaCode": "L-F678F1CE"})
    ec2.add_response("describe_vpcs", {"Vpcs": [{"VpcId": "vpc-1"}]}, {})
    aoss = stubs.stub("opensearchserverless")
    if ocus is None:
        aoss.add_client_error("get_account_settings", "AccessDeniedException", "not authorized: aoss:Get*")
    else:
        limits = {"maxIndexingCapacityInOCU": ocus, "maxSearchCapacityInOCU": ocus}
        aoss.add_response("get_account_settings", {"accountSettingsDetail": {"capacityLimits": limits}})
    cfn = stubs.stub("cloudformation")
    if bootstrap is None:
        cfn.add_client_error("describe_stacks", "ValidationError", "Stack with id CDKToolkit does not exist",
                             expected_params={"StackName": "CDKToolkit"})
    else:
        cfn.add_response("describe_stacks", {"Stacks": [{"StackName": "CDKToolkit", "StackStatus": bootstrap,
                                                          "CreationTime": "2026-01-01T00:00:00Z"}]},
                         {"StackName": "CDKToolkit"})
    files = weights if weights is not None else [
        "config.json", "model-00001-of-00002.safetensors", "tokenizer.json"]
    stubs.stub("s3").add_response(
        "list_objects_v2",
        {"Contents": [{"Key": f"llama/{f}", "Size": 10} for f in files], "KeyCount": len(files)},
        {"Bucket": BUCKET, "Prefix": "llama/", "MaxKeys": 1000},
    )


def run(monkeypatch: pytest.MonkeyPatch, stubs: Stubs, tmp_path: Path, data: dict[str, Any]) -> Any:
    path = tmp_path / "cdk.config.test.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(pf, "boto3_clients", lambda profile: stubs)
    return CliRunner().invoke(pf.preflight, ["--region", REGION, "--config", str(path)])


def test_a_ready_account_passes_every_check_one_line_each(
    monkeypatch: pytest.MonkeyPatch, stubs: Stubs, tmp_path: Path
) -> None:
    data = config_data()
    stub_account(stubs, parse_config(data))
    result = run(monkeypatch, stubs, tmp_path, data)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith("PASS") for line in lines), result.stdout
    names = " | ".join(lines)
    for expected in ("credentials", "for endpoint usage", "elastic IPs", "VPCs", "OpenSearch OCUs",
                     "CDK bootstrap", "model weights"):
        assert expected in names


def test_low_quota_missing_bootstrap_and_unstaged_weights_fail_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, stubs: Stubs, tmp_path: Path
) -> None:
    data = config_data()
    stub_account(stubs, parse_config(data), endpoint_quota=0, bootstrap=None, weights=["README.md"],
                 ocus=None)
    result = run(monkeypatch, stubs, tmp_path, data)
    assert result.exit_code == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    text = "\n".join(failed)
    assert "request an increase" in text and "run `cdk bootstrap`" in text
    assert "run `chatstack model stage`" in text and "OpenSearch OCUs" in text and "AccessDenied" in text
    assert any(line.startswith("PASS") and "elastic IPs" in line for line in result.stdout.splitlines())


def test_credentials_for_another_account_fail(stubs: Stubs) -> None:
    stubs.stub("sts").add_response("get_caller_identity", {"Account": "999999999999"})
    check = pf.check_account(parse_config(config_data()), stubs, REGION)
    assert check.status == "FAIL" and "999999999999" in check.detail and ACCOUNT in check.detail


def test_a_region_outside_the_config_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config_data()))
    result = CliRunner().invoke(pf.preflight, ["--region", "eu-north-1", "--config", str(path)])
    assert result.exit_code == 2 and "not one of the config's regions" in result.output


def test_the_command_is_registered_and_has_help() -> None:
    from chatstack.cli import main

    result = CliRunner().invoke(main, ["preflight", "--help"])
    assert result.exit_code == 0 and "--region" in result.output and "--config" in result.output


@pytest.mark.parametrize("command", [["preflight"], ["plan", "--users", "100"]])
def test_the_installed_script_reads_the_config_elsewhere(command: list[str], tmp_path: Path) -> None:
    """The console script, run from a directory that is not the checkout, with no PYTHONPATH: preflight
    imported `cdk.config` without putting the checkout on sys.path and died with a traceback."""
    import os
    import subprocess
    import sys

    script = Path(sys.executable).parent / "chatstack"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    config = ["--config", str(ROOT / "cdk.config.example.json")]
    extra = ["--region", "mars-1"] if command == ["preflight"] else []
    done = subprocess.run([str(script), *command, *config, *extra], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    if command == ["preflight"]:
        assert done.returncode == 2 and "mars-1 is not one of the config's regions" in done.stderr
    else:
        assert done.returncode == 0, done.stderr


def test_without_credentials_it_says_so_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It printed the same 'Unable to locate credentials' failure for every check of every region."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config_data()))
    result = CliRunner().invoke(pf.preflight, ["--config", str(path)])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "No AWS credentials found" in result.stderr
