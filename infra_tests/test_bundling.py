"""The Lambda code asset: built for the functions' platform, from the bundle's pinned dependency list."""

from __future__ import annotations

import tomllib
from pathlib import Path

from cdk.app import ROOT
from cdk.bundling import BundleSpec, dependency_key, lambda_dependencies, pip_command
from infra_tests.conftest import Synth


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


def test_every_function_of_a_region_shares_one_code_asset(synth: Synth) -> None:
    for region in synth.config.regions:
        api = synth.stack(region, "api")
        keys = {
            str(r["Properties"]["Code"])
            for r in api["Resources"].values()
            if r["Type"] == "AWS::Lambda::Function"
            and r["Properties"].get("Handler", "").startswith("lambdas.")
        }
        assert len(keys) == 1
