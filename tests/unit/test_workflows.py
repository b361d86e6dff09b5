"""The GitHub Actions workflows: CI runs the suite, both syntheses, cdk-nag and cfn-lint; deploy uses
OIDC and no stored keys, and waits for preflight.

Rules checked: GitHub's "Configuring OpenID Connect in Amazon Web Services" (the job needs
`permissions: id-token: write`; aws-actions/configure-aws-credentials assumes `role-to-assume` with the
OIDC token, so no `aws-access-key-id`/`aws-secret-access-key` input is used) and `jobs.<id>.needs`
(a job runs only after the jobs it needs succeeded)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

WORKFLOWS = Path(__file__).parents[2] / ".github" / "workflows"


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict)
    # YAML 1.1 reads the key `on` as the boolean true.
    data["on"] = data.pop(True, data.get("on"))
    return data


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps") or [])


def commands(workflow: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) for job in workflow["jobs"].values() for s in steps(job))


def test_ci_runs_the_tests_both_syntheses_cdk_nag_and_cfn_lint_on_every_template() -> None:
    ci = load("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    runs = commands(ci)
    assert "make test" in runs and "make synth" in runs
    assert "cfn-lint" in runs and "cdk.out/**/*.template.json" in runs  # the dev config's folder too
    assert any("cdk-nag" in str(s.get("name", "")) for job in ci["jobs"].values() for s in steps(job))
    assert "id-token" not in str(ci.get("permissions"))
    assert "secrets." not in (WORKFLOWS / "ci.yml").read_text()


def test_deploy_assumes_a_role_through_oidc_and_stores_no_keys() -> None:
    deploy = load("deploy.yml")
    text = (WORKFLOWS / "deploy.yml").read_text()
    for stored in ("aws-access-key-id", "aws-secret-access-key", "secrets.AWS"):
        assert stored not in text
    credential_steps = 0
    for name, job in deploy["jobs"].items():
        for step in steps(job):
            if str(step.get("uses", "")).startswith("aws-actions/configure-aws-credentials@"):
                credential_steps += 1
                assert step["with"]["role-to-assume"], name
                permissions = {**(deploy.get("permissions") or {}), **(job.get("permissions") or {})}
                assert permissions.get("id-token") == "write", f"job {name} cannot request an OIDC token"
    assert credential_steps >= 2


def test_deploy_runs_only_after_preflight_passed() -> None:
    deploy = load("deploy.yml")
    job_name = "deploy"
    needs = deploy["jobs"][job_name].get("needs")
    needs = [needs] if isinstance(needs, str) else list(needs or [])
    gates = [n for n in needs if "chatstack preflight" in commands({"jobs": {n: deploy["jobs"][n]}})]
    assert gates, "the deploy job needs no job that runs chatstack preflight"
    assert re.search(r"aws-cdk@\S* deploy --all", commands({"jobs": {job_name: deploy["jobs"][job_name]}}))
