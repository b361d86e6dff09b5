"""Whole-app checks: cdk-nag AwsSolutions finds no unsuppressed error, cfn-lint finds no error in any
template, synth needs no account lookup, and every stack of every region is there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import App, Environment, Stack, Validations
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import lint

from infra_tests.conftest import Synth

KINDS_PER_REGION = ("network", "data", "inference", "api", "observability", "routing")


def test_every_stack_of_every_region_is_synthesized(synth: Synth) -> None:
    expected = {
        f"{synth.config.name}-{region}-{kind}" for region in synth.config.regions for kind in KINDS_PER_REGION
    }
    expected |= {
        f"{synth.config.name}-{synth.config.primary_region}-{kind}" for kind in ("identity", "finance")
    }
    assert set(synth.templates) == expected


def test_cdk_nag_reports_no_unacknowledged_error(synth: Synth) -> None:
    """The session synth ran with the AwsSolutions pack, which interrupts synth on any error."""
    report = json.loads((synth.directory / "validation-report.json").read_text(encoding="utf-8"))
    errors = [
        (p["pluginName"], v["ruleName"])
        for p in report["pluginReports"]
        for v in p["violations"]
        if v["severity"] == "error"
    ]
    assert errors == []
    assert all(p["conclusion"] == "success" for p in report["pluginReports"])


def test_cdk_nag_as_wired_by_build_app_stops_synth_on_an_unacknowledged_error(tmp_path: Path) -> None:
    """Control for the test above: the same plugin wiring refuses a plainly non-compliant resource."""
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Control", env=Environment(account="111111111111", region="us-east-1"))
    sqs.CfnQueue(stack, "Plain")  # no encryption, no TLS policy: AwsSolutions-SQS2/SQS3/SQS4
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="AwsSolutions-SQS"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text(encoding="utf-8"))
    rules = {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]}
    assert any(rule.startswith("AwsSolutions-SQS") for rule in rules), rules


def test_synth_makes_no_context_lookups(synth: Synth) -> None:
    manifest = json.loads((synth.directory / "manifest.json").read_text(encoding="utf-8"))
    assert not manifest.get("missing")


@pytest.mark.parametrize("kind", KINDS_PER_REGION)
def test_cfn_lint_finds_no_error(synth: Synth, kind: str) -> None:
    for region in synth.config.regions:
        name = f"{synth.config.name}-{region}-{kind}"
        matches = lint(json.dumps(synth.templates[name]), regions=[region])
        errors = [f"{m.rule.id} {m.message}" for m in matches if m.rule.id.startswith("E")]
        assert errors == [], name


def test_cfn_lint_finds_no_error_in_the_global_stacks(synth: Synth) -> None:
    for kind in ("identity", "finance"):
        name = f"{synth.config.name}-{synth.config.primary_region}-{kind}"
        matches = lint(json.dumps(synth.templates[name]), regions=[synth.config.primary_region])
        assert [m for m in matches if m.rule.id.startswith("E")] == [], name
