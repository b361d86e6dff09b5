"""The deployment config: the example is valid, and each kind of bad input stops synth with one sentence
naming the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cdk.app import ROOT, file_context
from cdk.config import ConfigError, load_config, parse_config


def _example() -> dict[str, Any]:
    data = json.loads((ROOT / "cdk.config.example.json").read_text(encoding="utf-8"))
    data.pop("$comment")
    return data


def test_the_example_names_a_primary_a_secondary_and_a_domain_with_its_zone() -> None:
    config = load_config(file_context(), ROOT)
    assert config.primary_region != config.secondary_regions[0]
    assert config.domain_name == "example.com" and config.hosted_zone_id
    assert config.profile.name == config.model_profile


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"primary_region": "us-east-9"}, "primary_region"),
        ({"secondary_regions": ["mars-north-1"]}, "secondary_regions"),
        ({"model_profile": "no-such-model"}, "model_profile"),
        ({"secondary_regions": ["us-east-1"]}, "secondary_regions"),
        ({"hosted_zone_id": None}, "hosted_zone_id"),
        ({"model_profile": "local-extractive"}, "model_profile"),
        ({"routing_policy": "failover", "secondary_regions": ["us-west-2", "eu-west-1"]}, "routing_policy"),
        ({"alarm_email": "nobody"}, "alarm_email"),
        ({"monthly_budget_usd": -5}, "monthly_budget_usd"),
        ({"databse": {}}, "databse"),
        # Each of these passed validation and then failed synth with a jsii traceback, or synthesized
        # templates that cannot deploy (the CLI attack of the eighth session):
        ({"monthly_budget_usd": float("inf")}, "monthly_budget_usd"),
        ({"network": {"cidr": "999.1.1.1/16"}}, "cidr"),
        ({"network": {"cidr": "10.40.0.1/16"}}, "cidr"),
        ({"network": {"cidr": "8.8.0.0/16"}}, "cidr"),
        ({"network": {"availability_zone_suffixes": ["a", "a", "a"]}}, "availability_zone_suffixes"),
        ({"network": {"availability_zone_suffixes": ["a", "b", ""]}}, "availability_zone_suffixes"),
        ({"tags": {"aws:owner": "x"}}, "tags"),
        ({"secondary_regions": ["us-gov-west-1"]}, "partition"),
    ],
)
def test_bad_input_is_refused_with_one_sentence_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({**_example(), **change})
    message = str(raised.value)
    assert field in message
    assert message.endswith(".") and message.count(". ") == 0, message


def test_synth_with_a_bad_config_exits_2_with_one_sentence_and_writes_nothing(tmp_path: Path) -> None:
    bad = {**_example(), "secondary_regions": ["us-east-1"]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    env = {**os.environ, "CHATSTACK_CDK_CONFIG": str(path), "CDK_OUTDIR": str(tmp_path / "out")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "cdk" / "app.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "Invalid deployment config: secondary_regions must not contain the primary region 'us-east-1'."
    ]
    assert not (tmp_path / "out").exists()


def test_context_overrides_win_over_the_file() -> None:
    config = load_config({**file_context(), "chatstack": json.dumps({"monthly_budget_usd": 1234})}, ROOT)
    assert config.monthly_budget_usd == 1234


def test_the_dev_config_is_one_region_with_an_endpoint_that_scales_to_zero() -> None:
    """cdk.config.dev.json (the dev stack `make synth` writes into cdk.out/dev/): one region, no domain,
    pgvector, and inference components scaled to zero, on an AMI whose driver runs the image."""
    from aws_cdk import App

    from cdk.gpu_drivers import INFERENCE_AMI_CUDA, image_cuda
    from cdk.stacks.inference import InferenceStack

    config = load_config({"config": "cdk.config.dev.json"}, ROOT)
    assert config.regions == (config.primary_region,) and config.domain_name is None
    assert config.vector_store == "pgvector"
    assert config.use_inference_components and config.inference.scale_to_zero
    assert config.fallback_region(config.primary_region) == config.primary_region
    app = App()
    stack = InferenceStack(app, config=config, region=config.primary_region)
    template = json.loads(json.dumps(app.synth().get_stack_by_name(stack.stack_name).template))
    (variant,) = [
        v
        for r in template["Resources"].values()
        if r["Type"] == "AWS::SageMaker::EndpointConfig"
        for v in r["Properties"]["ProductionVariants"]
        if v["InstanceType"].startswith("ml.g")
    ]
    assert variant["ManagedInstanceScaling"]["MinInstanceCount"] == 0
    cuda = image_cuda(config.profile.image_uri(config.primary_region))
    assert cuda is not None and cuda <= INFERENCE_AMI_CUDA[variant["InferenceAmiVersion"]][1]
