"""`chatstack region` names only what the synthesized templates create.

The plan derives Aurora, Valkey and stack names from the config; these tests tie each one to the
resource the CDK code makes, so renaming a resource without the command fails here.
"""

from __future__ import annotations

from chatstack.commands.region_plan import (
    HEALTH_CHECK_FAILURE_THRESHOLD,
    HEALTH_CHECK_INTERVAL_S,
    HEALTH_CHECK_OUTPUT,
    dry_run_targets,
    plan_move,
    stack_name,
)
from infra_tests.conftest import Synth


def test_the_global_cluster_and_every_regional_cluster_the_plan_names_exist(synth: Synth) -> None:
    config = synth.config
    targets = dry_run_targets(config, {})
    primary = synth.stack(config.primary_region, "data")
    global_ids = [
        r["Properties"]["GlobalClusterIdentifier"]
        for r in synth.resources(primary, "AWS::RDS::GlobalCluster").values()
    ]
    assert global_ids == [targets.global_cluster_id]
    for region in config.regions:
        clusters = synth.resources(synth.stack(region, "data"), "AWS::RDS::DBCluster").values()
        names = [c["Properties"]["DBClusterIdentifier"] for c in clusters]
        assert names == [targets.cluster_arns[region].rsplit(":", 1)[1]]
        assert targets.cluster_arns[region].split(":")[3:5] == [region, config.account]


def test_every_region_has_the_valkey_group_the_promotion_names(synth: Synth) -> None:
    config = synth.config
    targets = dry_run_targets(config, {})
    for region in config.regions:
        groups = synth.resources(synth.stack(region, "data"), "AWS::ElastiCache::ReplicationGroup").values()
        assert [g["Properties"]["ReplicationGroupId"] for g in groups] == [targets.valkey_group_id]
    founded = synth.resources(
        synth.stack(config.primary_region, "data"), "AWS::ElastiCache::GlobalReplicationGroup"
    )
    assert len(founded) == 1 and targets.valkey_global_id is not None


def test_each_routing_stack_outputs_its_health_check_id_with_the_interval_the_docs_quote(
    synth: Synth,
) -> None:
    config = synth.config
    for region in config.regions:
        template = synth.templates[stack_name(config, region, "routing")]
        checks = synth.resources(template, "AWS::Route53::HealthCheck")
        output = template["Outputs"][HEALTH_CHECK_OUTPUT]["Value"]
        assert output == {"Ref": next(iter(checks))} and len(checks) == 1
        settings = next(iter(checks.values()))["Properties"]["HealthCheckConfig"]
        assert settings["RequestInterval"] == HEALTH_CHECK_INTERVAL_S
        assert settings["FailureThreshold"] == HEALTH_CHECK_FAILURE_THRESHOLD


def test_the_switchover_inverts_the_health_check_behind_the_primary_failover_records(synth: Synth) -> None:
    config = synth.config
    home, other = config.primary_region, config.secondary_regions[0]
    template = synth.templates[stack_name(config, home, "routing")]
    check_id = next(iter(synth.resources(template, "AWS::Route53::HealthCheck")))
    records = synth.resources(template, "AWS::Route53::RecordSet").values()
    assert records and all(
        r["Properties"]["Failover"] == "PRIMARY" and r["Properties"]["HealthCheckId"] == {"Ref": check_id}
        for r in records
    )
    calls = plan_move(config, dry_run_targets(config, {}), kind="switchover", to=other, current=home)
    assert (
        calls[-1].parameters["HealthCheckId"]
        == "${" + f"{stack_name(config, home, 'routing')}.HealthCheckId" + "}"
    )
