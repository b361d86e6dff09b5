"""One synth of the example deployment per test session, shared by every infra test.

Bundling is off (the code asset is just the source), so no pip or network is needed; cdk-nag runs
as during `make synth`, so a synth that returns at all has no unsuppressed AwsSolutions error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cdk.app import ROOT, build_app, file_context, quiet_node_warnings
from cdk.config import DeploymentConfig, load_config

# Before any test module imports aws_cdk (which starts the jsii runtime).
quiet_node_warnings()
Template = dict[str, Any]


@dataclass
class Synth:
    config: DeploymentConfig
    directory: Path
    templates: dict[str, Template]
    read_at: str = ""  # the synthesis's `chatstack:read-at` (cdk/constructs/regional_value.py)

    def stack(self, region: str, kind: str) -> Template:
        return self.templates[f"{self.config.name}-{region}-{kind}"]

    def resources(self, template: Template, type_: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}

    def all_resources(self, type_: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(stack name, logical id, resource) for every resource of `type_` in every stack."""
        return [
            (name, logical_id, resource)
            for name, template in self.templates.items()
            for logical_id, resource in template["Resources"].items()
            if resource["Type"] == type_
        ]


@pytest.fixture(scope="session")
def example_config() -> DeploymentConfig:
    return load_config(file_context(), ROOT)


@pytest.fixture(scope="session")
def synth(example_config: DeploymentConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synth]:
    outdir = tmp_path_factory.mktemp("cdk.out")
    from cdk.constructs.regional_value import READ_AT_CONTEXT

    read_at = "2026-11-30T01:00:00Z"
    context = {**file_context(), "bundling": False, READ_AT_CONTEXT: read_at}
    app, _ = build_app(example_config, context=context, outdir=str(outdir))
    assembly = app.synth()
    templates = {
        stack.stack_name: json.loads(Path(stack.template_full_path).read_text(encoding="utf-8"))
        for stack in assembly.stacks
    }
    yield Synth(config=example_config, directory=outdir, templates=templates, read_at=read_at)
