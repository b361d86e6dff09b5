"""`chatstack region status | switchover | failover`: move the database writer, the cache primary and
the traffic from one region to another, as one command each.

- switchover (planned): Aurora `SwitchoverGlobalCluster` syncs every secondary first, so RPO is 0;
  writes pause while the roles swap (typically a minute or two). Then the Valkey Global Datastore
  promotes the same region and, with failover routing, Route 53 is told to send traffic there.
- failover (unplanned): Aurora `FailoverGlobalCluster` with `AllowDataLoss`, so RPO is the replication
  lag at that moment (typically under a second); RTO is a minute or two for the Aurora and Valkey
  promotions, while Route 53 has already moved clients once the old region's health check failed.

Names come from the deployment config (the same loader as `cdk synth`); the Valkey Global Datastore id
(prefixed by AWS) is asked of the target region, and the Route 53 health check ids come from the
routing stacks' `HealthCheckId` outputs (or a `cdk deploy --outputs-file` file, which still works when
the failed region's CloudFormation does not answer). Building the plan is pure
(region_plan.py); running it is a thin boto3 loop whose polling is bounded in time. `--dry-run` prints the
plan as JSON lines and makes no AWS call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from chatstack.commands._cdk import CdkUnavailable, ensure_cdk_config
from chatstack.commands.region_plan import (
    CHECKS,
    RPO_RTO,
    Call,
    Kind,
    RegionError,
    Targets,
    aurora_writer_region,
    check_region,
    dry_run_targets,
    health_summary,
    joins_global_datastore,
    plan_move,
    plan_status,
    resolve_targets,
    stack_name,
    valkey_primary_region,
)

if TYPE_CHECKING:
    import boto3

    from cdk.config import DeploymentConfig

BAD_INPUT_EXIT = 2
FAILED_EXIT = 1


# ---- talking to AWS (thin) ----


def load_deployment(config_file: str | None) -> DeploymentConfig:
    _import_cdk_config()
    from cdk.config import DEFAULT_CONFIG_FILE, ConfigError, load_config

    try:
        return load_config({"config": config_file or DEFAULT_CONFIG_FILE}, Path.cwd())
    except ConfigError as error:
        raise RegionError(f"Invalid deployment config: {error}") from None


def _import_cdk_config() -> None:
    try:
        ensure_cdk_config("region")
    except CdkUnavailable as error:
        raise RegionError(str(error)) from None


def read_outputs_file(path: str | None) -> dict[str, dict[str, str]]:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RegionError(
            f"outputs file '{path}' cannot be read as JSON ({error.__class__.__name__})."
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise RegionError(f"outputs file '{path}' is not a `cdk deploy --outputs-file` object of stacks.")
    for stack, values in data.items():  # CloudFormation outputs are non-empty strings
        for key, value in values.items():
            if not isinstance(value, str) or not value:
                raise RegionError(f"outputs file '{path}': {stack}.{key} is not a non-empty string.")
    return {str(stack): {str(k): str(v) for k, v in values.items()} for stack, values in data.items()}


def aws_session() -> boto3.Session:
    import boto3

    session = boto3.Session()
    if session.get_credentials() is None:
        raise RegionError(
            "No AWS credentials found; configure them (for example AWS_PROFILE) or use --dry-run."
        )
    return session


def live_outputs(session: boto3.Session, config: DeploymentConfig) -> dict[str, dict[str, str]]:
    """Each routing stack's outputs from its own region; a region that does not answer is skipped."""
    from botocore.exceptions import BotoCoreError, ClientError

    found: dict[str, dict[str, str]] = {}
    if config.domain_name is None:
        return found
    for region in config.regions:
        name = stack_name(config, region, "routing")
        try:
            stacks = session.client("cloudformation", region_name=region).describe_stacks(StackName=name)
        except (BotoCoreError, ClientError) as error:
            click.echo(f"note: outputs of {name} not read ({error}).", err=True)
            continue
        found[name] = {o["OutputKey"]: o["OutputValue"] for o in stacks["Stacks"][0].get("Outputs", [])}
    return found


def live_valkey_global_id(session: boto3.Session, config: DeploymentConfig, region: str) -> str | None:
    if not joins_global_datastore(config):
        return None
    client = session.client("elasticache", region_name=region)
    group = client.describe_replication_groups(ReplicationGroupId=config.physical_name("valkey"))
    info = group["ReplicationGroups"][0].get("GlobalReplicationGroupInfo") or {}
    return info.get("GlobalReplicationGroupId")


def live_targets(
    session: boto3.Session, config: DeploymentConfig, outputs: Mapping[str, Mapping[str, str]], region: str
) -> Targets:
    merged = {**live_outputs(session, config), **outputs}
    return resolve_targets(config, merged, valkey_global_id=live_valkey_global_id(session, config, region))


def live_writer(session: boto3.Session, targets: Targets, region: str) -> str:
    response = session.client("rds", region_name=region).describe_global_clusters(
        GlobalClusterIdentifier=targets.global_cluster_id
    )
    writer = aurora_writer_region(response)
    if writer is None:
        raise RegionError(
            f"global cluster '{targets.global_cluster_id}' reports no writer; see the RDS console."
        )
    return writer


def run_calls(
    session: boto3.Session, calls: list[Call], *, sleep: Callable[[float], None] = time.sleep
) -> None:
    from botocore import xform_name

    for step, call in enumerate(calls, start=1):
        click.echo(f"[{step}/{len(calls)}] {call.service} {call.operation} in {call.region}: {call.why}")
        method = getattr(session.client(call.service, region_name=call.region), xform_name(call.operation))
        if call.until is None:
            method(**call.parameters)
            continue
        deadline = time.monotonic() + call.until.timeout_s
        while not CHECKS[call.until.check](method(**call.parameters), call.until.expect):
            if time.monotonic() > deadline:
                raise RegionError(
                    f"step {step} did not finish within {call.until.timeout_s} s; "
                    "check `chatstack region status` before running anything else."
                )
            sleep(call.until.interval_s)


# ---- the commands ----


def _fail(message: str, code: int = BAD_INPUT_EXIT) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(code)


config_option = click.option(
    "--config",
    "config_file",
    envvar="CHATSTACK_CDK_CONFIG",
    default=None,
    metavar="FILE",
    help="Deployment config (default cdk.config.example.json, or CHATSTACK_CDK_CONFIG).",
)
outputs_option = click.option(
    "--outputs",
    "outputs_file",
    default=None,
    metavar="FILE",
    help="A `cdk deploy --outputs-file` JSON file: stack outputs without asking CloudFormation.",
)
dry_run_option = click.option("--dry-run", is_flag=True, help="Print the plan as JSON lines; call nothing.")


@click.group()
def region() -> None:
    """Move the Aurora writer, the Valkey primary and the traffic between regions."""


@region.command()
@config_option
@outputs_option
@dry_run_option
def status(config_file: str | None, outputs_file: str | None, dry_run: bool) -> None:
    """Show the Aurora writer region, the Valkey primary region and each region's health check."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        config = load_deployment(config_file)
        outputs = read_outputs_file(outputs_file)
        if dry_run:
            for step, call in enumerate(plan_status(config, dry_run_targets(config, outputs)), start=1):
                click.echo(call.as_json(step))
            return
        session = aws_session()
        targets = live_targets(session, config, outputs, config.primary_region)
    except RegionError as error:
        _fail(str(error))
    except (BotoCoreError, ClientError) as error:  # the lookups before the status itself
        _fail(f"AWS did not answer the status query: {error}.", FAILED_EXIT)
    _show_status(session, config, targets)


def _show_status(session: boto3.Session, config: DeploymentConfig, targets: Targets) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        click.echo(
            f"Aurora writer:  {live_writer(session, targets, config.primary_region)}"
            f" (global cluster {targets.global_cluster_id})"
        )
        if targets.valkey_global_id is not None:
            response = session.client("elasticache", region_name=config.primary_region)
            groups = response.describe_global_replication_groups(
                GlobalReplicationGroupId=targets.valkey_global_id, ShowMemberInfo=True
            )
            primary = valkey_primary_region(groups)
            click.echo(f"Valkey primary: {primary} (global datastore {targets.valkey_global_id})")
        else:
            click.echo(
                "Valkey primary: every region keeps its own cache (latency routing, no Global Datastore)"
            )
        route53 = session.client("route53")
        for checked in config.regions:
            if checked not in targets.health_checks:
                click.echo(f"Health {checked}: no health check known (no domain or no routing stack output)")
                continue
            health_check = targets.health_checks[checked]
            summary = health_summary(
                route53.get_health_check(HealthCheckId=health_check),
                route53.get_health_check_status(HealthCheckId=health_check),
            )
            click.echo(f"Health {checked}: {summary}")
    except (BotoCoreError, ClientError) as error:
        _fail(f"AWS did not answer the status query: {error}.", FAILED_EXIT)


def _move(
    kind: Kind,
    to: str,
    config_file: str | None,
    outputs_file: str | None,
    source: str | None,
    dry_run: bool,
    yes: bool,
) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        config = load_deployment(config_file)
        check_region(config, to)
        if source is not None:
            check_region(config, source)
        outputs = read_outputs_file(outputs_file)
        if dry_run:
            calls = plan_move(
                config,
                dry_run_targets(config, outputs),
                kind=kind,
                to=to,
                current=source or config.primary_region,
            )
            click.echo(f"{kind}: {RPO_RTO[kind]}", err=True)
            for step, call in enumerate(calls, start=1):
                click.echo(call.as_json(step))
            return
        if kind == "failover" and not yes:
            raise RegionError(
                "failover may lose the last second of writes; run it again with --yes to go ahead."
            )
        session = aws_session()
        targets = live_targets(session, config, outputs, to)
        calls = plan_move(
            config, targets, kind=kind, to=to, current=source or live_writer(session, targets, to)
        )
    except RegionError as error:
        _fail(str(error))
    except (BotoCoreError, ClientError) as error:
        _fail(f"AWS did not answer while planning the {kind}: {error}.", FAILED_EXIT)
    routed = config.routing_policy == "failover" and config.domain_name is not None
    if routed and not any(call.service == "route53" for call in calls):
        if kind == "switchover":
            _fail(
                f"the health check id of {config.primary_region} is unknown; pass --outputs FILE "
                "written by `cdk deploy --outputs-file`."
            )
        click.echo(
            f"note: {config.primary_region}'s health check id is unknown, so traffic is not "
            "pinned; it moves only while that region's health check fails.",
            err=True,
        )
    click.echo(f"{kind} to {to}: {RPO_RTO[kind]}")
    if kind == "switchover" and not yes:
        click.confirm(f"Run these {len(calls)} steps now?", abort=True)
    try:
        run_calls(session, calls)
    except RegionError as error:
        _fail(str(error), FAILED_EXIT)
    except (BotoCoreError, ClientError) as error:
        _fail(
            f"the {kind} stopped: {error}; the steps before it took effect (see `chatstack region status`).",
            FAILED_EXIT,
        )
    click.echo(f"{kind} to {to} done; WebSocket clients reconnect and send `resume` with their last seq.")


to_option = click.option("--to", "to", required=True, metavar="REGION", help="The region to make primary.")
from_option = click.option(
    "--from",
    "source",
    default=None,
    metavar="REGION",
    help="The region holding the writer now (default: asked of AWS; with --dry-run the config's primary).",
)


@region.command()
@to_option
@config_option
@outputs_option
@from_option
@dry_run_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def switchover(
    to: str, config_file: str | None, outputs_file: str | None, source: str | None, dry_run: bool, yes: bool
) -> None:
    """Planned move with no data loss (RPO 0): Aurora switchover, Valkey promotion, then traffic."""
    _move("switchover", to, config_file, outputs_file, source, dry_run, yes)


@region.command()
@to_option
@config_option
@outputs_option
@from_option
@dry_run_option
@click.option("--yes", is_flag=True, help="Required: accept losing the unreplicated writes (about 1 s).")
def failover(
    to: str, config_file: str | None, outputs_file: str | None, source: str | None, dry_run: bool, yes: bool
) -> None:
    """Unplanned move when a region is down (RPO = replication lag): promote `--to` without waiting."""
    _move("failover", to, config_file, outputs_file, source, dry_run, yes)
