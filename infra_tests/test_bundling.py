"""The Lambda code asset: built for the functions' platform, from the bundle's pinned dependency list."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cdk.app import ROOT
from cdk.bundle_report import import_blocked
from cdk.bundling import (
    OPENSEARCH,
    REST_ONLY,
    BundleSpec,
    blocked_modules,
    dependency_key,
    excluded_for,
    lambda_dependencies,
    pip_command,
    requirement_name,
)
from cdk.constructs.chat_functions import lambda_handler_path
from cdk.stacks.api import REGIONAL_FUNCTIONS
from infra_tests.conftest import Synth
from lambdas import wiring


def test_the_dependency_list_is_the_projects_base_dependencies() -> None:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        expected = tomllib.load(handle)["project"]["dependencies"]
    assert lambda_dependencies(ROOT / "pyproject.toml") == expected
    assert not any(dep.startswith(("aws-cdk", "sagemaker", "torch")) for dep in expected)


def test_pip_installs_binary_wheels_for_python_3_12_on_arm64(tmp_path: Path) -> None:
    command = pip_command(["pydantic==2.14.4"], tmp_path, None)
    joined = " ".join(command)
    assert "--platform manylinux2014_aarch64" in joined and "--platform manylinux_2_28_aarch64" in joined
    assert "--only-binary=:all:" in joined
    assert "--python-version 3.12" in joined and "--implementation cp" in joined
    assert command[-1] == "pydantic==2.14.4" and f"--target {tmp_path}" in joined
    offline = " ".join(pip_command(["x"], tmp_path, tmp_path / "wheels"))
    assert f"--no-index --find-links {tmp_path / 'wheels'}" in offline


def test_the_cache_key_changes_with_the_dependency_list() -> None:
    assert dependency_key(["a==1"]) == dependency_key(["a==1"])
    assert dependency_key(["a==1"]) != dependency_key(["a==2"])


def test_without_dependencies_the_asset_is_the_lambdas_package(tmp_path: Path) -> None:
    BundleSpec(root=ROOT, install_dependencies=False, cache_dir=tmp_path / "cache").bundle_into(
        tmp_path / "out"
    )
    assert (tmp_path / "out" / "lambdas" / "wiring.py").is_file()
    assert not list((tmp_path / "out").rglob("__pycache__"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["lambdas"]


def test_functions_share_one_asset_per_dependency_list_and_the_light_ones_leave_the_heavy_out(
    synth: Synth,
) -> None:
    opensearch = synth.config.vector_store == "opensearch"
    for region in synth.config.regions:
        api = synth.stack(region, "api")
        codes: dict[str, str] = {}
        for r in api["Resources"].values():
            handler = r["Properties"].get("Handler", "") if r["Type"] == "AWS::Lambda::Function" else ""
            if handler.startswith("lambdas."):
                codes[handler] = str(r["Properties"]["Code"])
        by_exclusion: dict[frozenset[str], set[str]] = {}
        for spec in REGIONAL_FUNCTIONS:
            by_exclusion.setdefault(excluded_for(spec, opensearch=opensearch), set()).add(
                codes[lambda_handler_path(spec)]
            )
        # One asset per dependency list, and a different one for each list.
        assert all(len(assets) == 1 for assets in by_exclusion.values())
        assert len({next(iter(a)) for a in by_exclusion.values()}) == len(by_exclusion)
    light = excluded_for(wiring.PING, opensearch=True)
    assert {"fastapi", "opensearch-py"} <= light and not excluded_for(wiring.REST_API, opensearch=True)


def test_the_bundle_lists_leave_out_exactly_the_excluded_requirements() -> None:
    spec = BundleSpec(root=ROOT, install_dependencies=False, cache_dir=Path("unused"))
    light = spec.without(excluded_for(wiring.CONNECT, opensearch=True))
    names = {requirement_name(d) for d in light.dependencies}
    assert names == {requirement_name(d) for d in spec.dependencies} - REST_ONLY - OPENSEARCH
    assert dependency_key(light.dependencies) != dependency_key(spec.dependencies)
    assert requirement_name("psycopg[binary]==3.3.9") == "psycopg"


@pytest.mark.parametrize("spec", wiring.FUNCTIONS, ids=lambda f: f.name)
def test_every_handler_imports_without_what_its_bundle_leaves_out(spec: wiring.Function) -> None:
    """The bundle decision, checked by importing the handler with the left-out packages blocked."""
    blocked = blocked_modules(excluded_for(spec, opensearch=True))
    result = import_blocked(spec.module, blocked, check=False)
    assert result.returncode == 0, result.stderr[-800:]



def imported_by(script: str) -> set[str]:
    """The modules a fresh interpreter holds after running `script` (imports: a cold start)."""
    code = script + "\nimport sys\nprint(','.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(result.stdout.strip().split(","))


def test_no_function_loads_the_xray_sdk_at_cold_start() -> None:
    """Lambda's active tracing records each invocation without it; loading it cost about 0.3 s of CPU
    per cold start (lambdas/observability.py). All handlers in one interpreter: none may pull it in."""
    imported = imported_by("\n".join(f"import {spec.module}" for spec in wiring.FUNCTIONS))
    assert "aws_xray_sdk" not in imported and wiring.WORKER.module in imported


def test_the_cognito_trigger_opens_no_client_at_cold_start() -> None:
    """Cognito fails a sign-in whose Pre Token Generation trigger takes more than 5 seconds
    (https://docs.aws.amazon.com/cognito/latest/developerguide/cognito-user-pools-working-with-lambda-triggers.html),
    and the trigger runs in 128 MB: it imports no AWS SDK, database or Redis driver."""
    imported = imported_by(f"import {wiring.PRE_TOKEN.module}")
    # Powertools imports botocore's package for its user agent, not its clients.
    heavy = {"boto3", "botocore.client", "botocore.session", "psycopg", "redis", "aws_xray_sdk", "jwt"}
    assert not imported & heavy, imported & heavy
    assert wiring.PRE_TOKEN.module in imported
