"""The pure half of `chatstack region`: from a deployment config and the stacks' outputs to the exact
AWS calls of a switchover, failover or status query, and the readers of their documented responses.

Nothing here calls AWS, so `--dry-run` and the tests see exactly what would run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from cdk.config import DeploymentConfig

HEALTH_CHECK_OUTPUT = "HealthCheckId"
# What cdk/constructs/dns_records.py configures; docs/deploy.md quotes the same numbers.
HEALTH_CHECK_INTERVAL_S = 10
HEALTH_CHECK_FAILURE_THRESHOLD = 3
Kind = Literal["switchover", "failover"]

RPO_RTO: dict[Kind, str] = {
    "switchover": (
        "RPO 0 (Aurora syncs every secondary before the roles swap); writes pause for the switch, "
        "typically a minute or two, and clients move within about "
        f"{HEALTH_CHECK_INTERVAL_S * HEALTH_CHECK_FAILURE_THRESHOLD} s of the Route 53 change plus DNS "
        "caching."
    ),
    "failover": (
        "RPO = the replication lag when the old primary failed (typically under 1 s); RTO about 1-2 min "
        "for the Aurora and Valkey promotions, while Route 53 moves clients after "
        f"{HEALTH_CHECK_FAILURE_THRESHOLD} failed checks {HEALTH_CHECK_INTERVAL_S} s apart plus DNS caching."
    ),
}


class RegionError(Exception):
    """Input or state the command cannot act on; the message is one sentence."""


@dataclass(frozen=True)
class Until:
    """Repeat the call until `check` holds for `expect`, polling every `interval_s`, at most `timeout_s`."""

    check: Literal["aurora_writer", "valkey_primary"]
    expect: str
    timeout_s: int
    interval_s: int


@dataclass(frozen=True)
class Call:
    """One AWS API call: botocore service name, region, API operation name and its parameters."""

    service: str
    region: str
    operation: str
    parameters: dict[str, Any]
    why: str
    until: Until | None = None

    def as_json(self, step: int) -> str:
        data = {"step": step, **asdict(self)}
        if self.until is None:
            del data["until"]
        return json.dumps(data, sort_keys=False)


@dataclass(frozen=True)
class Targets:
    """Every identifier the plans need. Health checks exist only with a domain (routing stacks)."""

    global_cluster_id: str
    cluster_arns: dict[str, str]
    valkey_group_id: str
    valkey_global_id: str | None
    health_checks: dict[str, str] = field(default_factory=dict)


def stack_name(config: DeploymentConfig, region: str, kind: str) -> str:
    """The name cdk/stacks/base.py gives a stack (infra_tests/test_region_plan.py checks they agree)."""
    return f"{config.name}-{region}-{kind}"


def cluster_arn(config: DeploymentConfig, region: str) -> str:
    import botocore.session

    partition = botocore.session.get_session().get_partition_for_region(region)
    return f"arn:{partition}:rds:{region}:{config.account}:cluster:{config.physical_name('aurora', region)}"


def placeholder(stack: str, output: str) -> str:
    """Stands for an identifier only AWS knows, in a dry run without an outputs file."""
    return "${" + f"{stack}.{output}" + "}"


def joins_global_datastore(config: DeploymentConfig) -> bool:
    """cdk/stacks/data.py founds a Valkey Global Datastore only with failover routing and a secondary
    region (one region has nobody to replicate to)."""
    return config.routing_policy == "failover" and bool(config.secondary_regions)


def resolve_targets(
    config: DeploymentConfig,
    outputs: Mapping[str, Mapping[str, str]],
    *,
    valkey_global_id: str | None,
) -> Targets:
    """Identifiers from the config, the stack outputs found, and the Global Datastore id (when known)."""
    health_checks: dict[str, str] = {}
    if config.domain_name is not None:
        for region in config.regions:
            stack = stack_name(config, region, "routing")
            found = outputs.get(stack, {}).get(HEALTH_CHECK_OUTPUT)
            if found:
                health_checks[region] = found
    return Targets(
        global_cluster_id=config.physical_name("global"),
        cluster_arns={region: cluster_arn(config, region) for region in config.regions},
        valkey_group_id=config.physical_name("valkey"),
        valkey_global_id=valkey_global_id if joins_global_datastore(config) else None,
        health_checks=health_checks,
    )


def dry_run_targets(config: DeploymentConfig, outputs: Mapping[str, Mapping[str, str]]) -> Targets:
    """Targets with placeholders wherever only AWS knows the value."""
    placeholders = {
        stack_name(config, region, "routing"): {
            HEALTH_CHECK_OUTPUT: placeholder(stack_name(config, region, "routing"), HEALTH_CHECK_OUTPUT)
        }
        for region in config.regions
    }
    merged = {
        name: {**placeholders.get(name, {}), **outputs.get(name, {})} for name in {*placeholders, *outputs}
    }
    # A live run reads it from DescribeReplicationGroups in the target region (AWS prefixes the id).
    global_id = placeholder(config.physical_name("valkey"), "GlobalReplicationGroupId")
    return resolve_targets(config, merged, valkey_global_id=global_id)


def check_region(config: DeploymentConfig, region: str) -> None:
    from cdk.config import known_regions

    if region not in known_regions():
        raise RegionError(f"'{region}' is not a known AWS region.")
    if region not in config.regions:
        raise RegionError(
            f"'{region}' is not one of this deployment's regions ({', '.join(config.regions)})."
        )


def plan_move(config: DeploymentConfig, targets: Targets, *, kind: Kind, to: str, current: str) -> list[Call]:
    """The calls that make `to` the writer region, in order: Aurora, Valkey, then traffic."""
    check_region(config, to)
    if to == current:
        raise RegionError(f"'{to}' already holds the Aurora writer; pick another region with --to.")
    target_arn = targets.cluster_arns[to]
    calls: list[Call] = []
    if kind == "switchover":
        calls.append(
            Call(
                "rds",
                to,
                "SwitchoverGlobalCluster",
                {
                    "GlobalClusterIdentifier": targets.global_cluster_id,
                    "TargetDbClusterIdentifier": target_arn,
                },
                f"planned switchover of the Aurora writer from {current} to {to} (secondaries synced first)",
            )
        )
    else:
        calls.append(
            Call(
                "rds",
                to,
                "FailoverGlobalCluster",
                {
                    "GlobalClusterIdentifier": targets.global_cluster_id,
                    "TargetDbClusterIdentifier": target_arn,
                    "AllowDataLoss": True,
                },
                f"promote {to}'s Aurora cluster without waiting for {current} (loses the unreplicated lag)",
            )
        )
    calls.append(
        Call(
            "rds",
            to,
            "DescribeGlobalClusters",
            {"GlobalClusterIdentifier": targets.global_cluster_id},
            f"wait until {to}'s cluster is the writer and the global cluster is available",
            Until("aurora_writer", target_arn, timeout_s=1200, interval_s=15),
        )
    )
    if targets.valkey_global_id is not None:
        calls.append(
            Call(
                "elasticache",
                to,
                "FailoverGlobalReplicationGroup",
                {
                    "GlobalReplicationGroupId": targets.valkey_global_id,
                    "PrimaryRegion": to,
                    "PrimaryReplicationGroupId": targets.valkey_group_id,
                },
                f"promote {to}'s Valkey replication group to primary of the Global Datastore",
            )
        )
        calls.append(
            Call(
                "elasticache",
                to,
                "DescribeGlobalReplicationGroups",
                {"GlobalReplicationGroupId": targets.valkey_global_id, "ShowMemberInfo": True},
                f"wait until {to}'s Valkey group is the associated primary",
                Until("valkey_primary", to, timeout_s=900, interval_s=10),
            )
        )
    home = config.primary_region
    if config.routing_policy == "failover" and home in targets.health_checks:
        # Failover records name the config's primary region PRIMARY; inverting its health check is a
        # reversible switch Route 53 documents, needs no record change, and survives the old region
        # coming back (its Valkey group is then read-only, so traffic must not return on its own).
        away = to != home
        calls.append(
            Call(
                "route53",
                to,
                "UpdateHealthCheck",
                {"HealthCheckId": targets.health_checks[home], "Inverted": away},
                (
                    f"hold traffic away from {home}: invert its health check so the SECONDARY record answers"
                    if away
                    else f"send traffic back to {home}: stop inverting its health check"
                ),
            )
        )
    return calls


def plan_status(config: DeploymentConfig, targets: Targets) -> list[Call]:
    region = config.primary_region
    calls = [
        Call(
            "rds",
            region,
            "DescribeGlobalClusters",
            {"GlobalClusterIdentifier": targets.global_cluster_id},
            "which cluster is the Aurora writer",
        )
    ]
    if targets.valkey_global_id is not None:
        calls.append(
            Call(
                "elasticache",
                region,
                "DescribeGlobalReplicationGroups",
                {"GlobalReplicationGroupId": targets.valkey_global_id, "ShowMemberInfo": True},
                "which region holds the Valkey primary",
            )
        )
    for checked, health_check in targets.health_checks.items():
        calls.append(
            Call(
                "route53",
                region,
                "GetHealthCheck",
                {"HealthCheckId": health_check},
                f"whether {checked}'s health check is inverted",
            )
        )
        calls.append(
            Call(
                "route53",
                region,
                "GetHealthCheckStatus",
                {"HealthCheckId": health_check},
                f"what Route 53's checkers see in {checked}",
            )
        )
    return calls


# ---- reading responses (documented response shapes; pure) ----


def aurora_writer_region(response: Mapping[str, Any]) -> str | None:
    for member in response.get("GlobalClusters", [{}])[0].get("GlobalClusterMembers", []):
        if member.get("IsWriter"):
            return str(member["DBClusterArn"]).split(":")[3]
    return None


def aurora_is_writer(response: Mapping[str, Any], arn: str) -> bool:
    cluster = response.get("GlobalClusters", [{}])[0]
    members = cluster.get("GlobalClusterMembers", [])
    writer = any(m.get("IsWriter") and m.get("DBClusterArn") == arn for m in members)
    return writer and cluster.get("Status") == "available"


def valkey_primary_region(response: Mapping[str, Any]) -> str | None:
    for member in response.get("GlobalReplicationGroups", [{}])[0].get("Members", []):
        if member.get("Role") == "PRIMARY":
            return str(member["ReplicationGroupRegion"])
    return None


def valkey_is_primary(response: Mapping[str, Any], region: str) -> bool:
    members = response.get("GlobalReplicationGroups", [{}])[0].get("Members", [])
    return any(
        m.get("Role") == "PRIMARY"
        and m.get("ReplicationGroupRegion") == region
        and m.get("Status") == "associated"
        for m in members
    )


CHECKS: dict[str, Callable[[Mapping[str, Any], str], bool]] = {
    "aurora_writer": aurora_is_writer,
    "valkey_primary": valkey_is_primary,
}


def health_summary(check: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    reports = [o.get("StatusReport", {}).get("Status", "") for o in status.get("HealthCheckObservations", [])]
    passing = sum(1 for report in reports if report.startswith("Success"))
    inverted = bool(check.get("HealthCheck", {}).get("HealthCheckConfig", {}).get("Inverted"))
    verdict = "healthy" if reports and passing * 2 > len(reports) else "unhealthy"
    note = " (inverted by a switchover: Route 53 treats it as the opposite)" if inverted else ""
    return f"{verdict}, {passing}/{len(reports)} checkers see success{note}"
