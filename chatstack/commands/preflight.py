"""`chatstack preflight`: check an AWS account and its regions before a deploy, one line per check.

Read-only calls, each a documented API: STS GetCallerIdentity (the credentials' account is the config's);
Service Quotas for the endpoint instance types (`ml.<type> for endpoint usage`), Elastic IPs (one per
NAT gateway) and VPCs; OpenSearch Serverless capacity limits (OCUs) when the vector store is
OpenSearch; the CDK bootstrap stack (`CDKToolkit`); the staged model weights (ListObjectsV2 on the
s3:// prefix); the Hugging Face token secret when weights come from the hub. The exit status is 1 when
any check fails, so a deploy pipeline can gate on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

if TYPE_CHECKING:
    from cdk.config import DeploymentConfig

Status = Literal["PASS", "FAIL", "WARN"]
ClientFactory = Callable[[str, str], Any]  # (service, region) -> boto3 client

# Service Quotas codes (Service Quotas console / ListServiceQuotas): EC2-VPC Elastic IPs; VPCs per Region.
EIP_QUOTA = ("ec2", "L-0263D0A3")
VPC_QUOTA = ("vpc", "L-F678F1CE")
# OpenSearch Serverless bills at least 2 indexing and 2 search OCUs for the first collection with
# redundancy (OpenSearch Serverless developer guide, "Managing capacity limits").
MIN_OCUS = 2
BOOTSTRAP_STACK = "CDKToolkit"
READY_STACK = re.compile(r"^(CREATE|UPDATE|IMPORT)_COMPLETE$|^UPDATE_ROLLBACK_COMPLETE$")
WEIGHT_FILE = re.compile(r"\.(safetensors|bin|pt|gguf)$")


@dataclass(frozen=True, slots=True)
class Check:
    region: str
    name: str
    status: Status
    detail: str

    def line(self) -> str:
        return f"{self.status:4}  {self.region:14}  {self.name:24}  {self.detail}"


def _error_text(exc: Exception) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip()
    if isinstance(exc, BotoCoreError):
        return str(exc)
    raise exc


def _sagemaker_quotas(sq: Any) -> dict[str, float]:
    """Every SageMaker quota of the region by name: one paginated listing for all instance types."""
    found: dict[str, float] = {}
    for page in sq.get_paginator("list_service_quotas").paginate(ServiceCode="sagemaker"):
        for quota in page.get("Quotas", []):
            found[str(quota.get("QuotaName"))] = float(quota["Value"])
    return found


def endpoint_instances(config: DeploymentConfig) -> dict[str, int]:
    """Instances each SageMaker instance type needs at full scale in one region."""
    needed: dict[str, int] = {}
    profile = config.profile
    if not profile.is_local:
        count = max(profile.instance_count, profile.max_instances)
        needed[profile.instance_type] = needed.get(profile.instance_type, 0) + count
    if config.embeddings.enabled:
        emb = config.embedding_profile
        count = max(emb.instance_count, emb.max_instances)
        needed[emb.instance_type] = needed.get(emb.instance_type, 0) + count
    return needed


def check_account(config: DeploymentConfig, client: ClientFactory, region: str) -> Check:
    try:
        account = client("sts", region).get_caller_identity()["Account"]
    except Exception as exc:
        return Check(region, "credentials", "FAIL", _error_text(exc))
    if account != config.account:
        detail = f"account {account}, but the config deploys to {config.account}"
        return Check(region, "credentials", "FAIL", detail)
    return Check(region, "credentials", "PASS", f"account {account}")


def check_endpoint_quotas(config: DeploymentConfig, client: ClientFactory, region: str) -> Iterator[Check]:
    try:
        quotas = _sagemaker_quotas(client("service-quotas", region))
    except Exception as exc:
        yield Check(region, "endpoint quotas", "FAIL", _error_text(exc))
        return
    for instance_type, count in endpoint_instances(config).items():
        name = f"{instance_type} for endpoint usage"
        value = quotas.get(name)
        if value is None:
            yield Check(region, f"quota {instance_type}", "FAIL", f"no quota named '{name}' here")
        elif value < count:
            detail = f"'{name}' is {value:g}, this deployment scales to {count}; request an increase"
            yield Check(region, f"quota {instance_type}", "FAIL", detail)
        else:
            detail = f"'{name}' is {value:g}, needs {count}"
            yield Check(region, f"quota {instance_type}", "PASS", detail)


def _headroom(
    client: ClientFactory,
    region: str,
    quota: tuple[str, str],
    used: Callable[[], int],
    needed: int,
    what: str,
) -> Check:
    try:
        value = client("service-quotas", region).get_service_quota(ServiceCode=quota[0], QuotaCode=quota[1])
        limit = float(value["Quota"]["Value"])
        in_use = used()
    except Exception as exc:
        return Check(region, what, "FAIL", _error_text(exc))
    if in_use + needed > limit:
        return Check(region, what, "FAIL", f"{in_use} in use + {needed} needed > quota {limit:g}")
    return Check(region, what, "PASS", f"{in_use} in use + {needed} needed <= quota {limit:g}")


def check_network(config: DeploymentConfig, client: ClientFactory, region: str) -> Iterator[Check]:
    ec2 = client("ec2", region)
    eips = config.network.nat_gateways  # one per NAT gateway
    addresses = lambda: len(ec2.describe_addresses()["Addresses"])  # noqa: E731
    yield _headroom(client, region, EIP_QUOTA, addresses, eips, "elastic IPs")
    yield _headroom(client, region, VPC_QUOTA, lambda: len(ec2.describe_vpcs()["Vpcs"]), 1, "VPCs")


def check_opensearch(config: DeploymentConfig, client: ClientFactory, region: str) -> Iterator[Check]:
    if config.vector_store != "opensearch":
        return
    try:
        settings = client("opensearchserverless", region).get_account_settings()["accountSettingsDetail"]
    except Exception as exc:
        yield Check(region, "OpenSearch OCUs", "FAIL", _error_text(exc))
        return
    limits = settings.get("capacityLimits") or {}
    indexing = limits.get("maxIndexingCapacityInOCU", 0)
    search = limits.get("maxSearchCapacityInOCU", 0)
    status: Status = "PASS" if min(indexing, search) >= MIN_OCUS else "FAIL"
    detail = f"max indexing {indexing}, max search {search} OCUs; a collection needs {MIN_OCUS} of each"
    yield Check(region, "OpenSearch OCUs", status, detail)


def check_bootstrap(client: ClientFactory, region: str) -> Check:
    try:
        stacks = client("cloudformation", region).describe_stacks(StackName=BOOTSTRAP_STACK)["Stacks"]
    except Exception as exc:
        text = _error_text(exc)
        hint = "; run `cdk bootstrap`" if "does not exist" in text else ""
        return Check(region, "CDK bootstrap", "FAIL", text + hint)
    status = stacks[0]["StackStatus"] if stacks else "MISSING"
    ok: Status = "PASS" if READY_STACK.match(status) else "FAIL"
    return Check(region, "CDK bootstrap", ok, f"{BOOTSTRAP_STACK} is {status}")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    match = re.match(r"^s3://([^/]+)/?(.*)$", uri)
    if not match:
        raise click.BadParameter(f"{uri!r} is not an s3:// URI.")
    return match.group(1), match.group(2)


def check_weights(config: DeploymentConfig, client: ClientFactory, region: str) -> Check:
    uri = config.weights_uri(region)
    if not uri.startswith("s3://"):
        return _check_hf_token(config, client, region, uri)
    bucket, prefix = parse_s3_uri(uri)
    try:
        listing = client("s3", region).list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1000)
    except Exception as exc:
        return Check(region, "model weights", "FAIL", f"{uri}: {_error_text(exc)}")
    names = [obj["Key"][len(prefix) :] for obj in listing.get("Contents", [])]
    if "config.json" not in names or not any(WEIGHT_FILE.search(n) for n in names):
        detail = f"{uri} has no config.json and weight files; run `chatstack model stage`"
        return Check(region, "model weights", "FAIL", detail)
    return Check(region, "model weights", "PASS", f"{uri}: {len(names)} files")


def _check_hf_token(config: DeploymentConfig, client: ClientFactory, region: str, model_id: str) -> Check:
    """Weights from the hub: gated models need a token, which must come from Secrets Manager."""
    secret = getattr(config.inference, "hf_token_secret", None)
    if not secret:
        detail = (
            f"{model_id} downloads from the Hugging Face hub at every start and no HF token secret is "
            "configured (gated models fail); stage it with `chatstack model stage`"
        )
        return Check(region, "model weights", "WARN", detail)
    try:
        client("secretsmanager", region).describe_secret(SecretId=secret)
    except Exception as exc:
        return Check(region, "HF token secret", "FAIL", f"{secret}: {_error_text(exc)}")
    return Check(region, "HF token secret", "PASS", f"{secret} exists")


def run_checks(config: DeploymentConfig, regions: Iterable[str], client: ClientFactory) -> list[Check]:
    checks: list[Check] = []
    for region in regions:
        checks.append(check_account(config, client, region))
        checks.extend(check_endpoint_quotas(config, client, region))
        checks.extend(check_network(config, client, region))
        checks.extend(check_opensearch(config, client, region))
        checks.append(check_bootstrap(client, region))
        checks.append(check_weights(config, client, region))
    return checks


def boto3_clients(profile: str | None) -> ClientFactory:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    try:
        session = boto3.Session(profile_name=profile)
        credentials = session.get_credentials()
    except BotoCoreError as exc:  # an unknown --profile, a broken config file
        raise click.ClickException(f"{str(exc).rstrip('.')}.") from None
    if credentials is None:  # every check would fail alike: say it once
        raise click.ClickException(
            "No AWS credentials found; configure them (for example AWS_PROFILE or --profile), then run again."
        )
    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=20)
    cache: dict[tuple[str, str], Any] = {}

    def client(service: str, region: str) -> Any:
        if (service, region) not in cache:
            cache[service, region] = session.client(service, region_name=region, config=config)
        return cache[service, region]

    return client


@click.command()
@click.option("--region", default=None, help="Check this region only (default: every region of the config).")
@click.option(
    "--config",
    "config_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Deployment config (default: CHATSTACK_CDK_CONFIG or cdk.config.example.json).",
)
@click.option("--profile", default=None, help="AWS named profile (default: the usual credential chain).")
def preflight(region: str | None, config_file: Path | None, profile: str | None) -> None:
    """Check an AWS account and region before `cdk deploy`: quotas, bootstrap, weights, secrets."""
    import os

    from chatstack.commands._cdk import CdkUnavailable, ensure_cdk_config

    try:
        ensure_cdk_config("preflight")
    except CdkUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    from cdk.config import ConfigError, load_config

    path = config_file or Path(os.environ.get("CHATSTACK_CDK_CONFIG") or "cdk.config.example.json")
    try:
        config = load_config({"config": str(path.resolve())}, Path.cwd())
    except ConfigError as exc:
        raise click.ClickException(f"Invalid deployment config: {exc}") from None
    if region is not None and region not in config.regions:
        message = f"{region} is not one of the config's regions {list(config.regions)}."
        raise click.BadParameter(message, param_hint="--region")
    checks = run_checks(config, [region] if region else config.regions, boto3_clients(profile))
    for check in checks:
        click.echo(check.line())
    failed = sum(c.status == "FAIL" for c in checks)
    click.echo(f"{len(checks)} checks, {failed} failed", err=True)
    if failed:
        raise SystemExit(1)
