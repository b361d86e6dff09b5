"""The data stores of every region: encryption at rest and in transit, durability, global membership."""

from __future__ import annotations

import json

from infra_tests.conftest import Synth
from infra_tests.helpers import referenced_ids, strings


def test_every_aurora_cluster_is_encrypted_deletion_protected_backed_up_and_requires_tls(
    synth: Synth,
) -> None:
    clusters = synth.all_resources("AWS::RDS::DBCluster")
    assert {stack for stack, _, _ in clusters} == {f"chatstack-{r}-data" for r in synth.config.regions}
    for stack, _, cluster in clusters:
        props = cluster["Properties"]
        assert props["StorageEncrypted"] is True and props["KmsKeyId"], stack
        assert props["DeletionProtection"] is True, stack
        assert props["BackupRetentionPeriod"] >= 1, stack
        groups = synth.resources(synth.templates[stack], "AWS::RDS::DBClusterParameterGroup")
        group_id = props["DBClusterParameterGroupName"]["Ref"]
        assert groups[group_id]["Properties"]["Parameters"]["rds.force_ssl"] == "1", stack


def test_the_primary_cluster_founds_the_global_database_and_the_secondary_joins_it(synth: Synth) -> None:
    primary = synth.stack(synth.config.primary_region, "data")
    ((global_id, global_cluster),) = synth.resources(primary, "AWS::RDS::GlobalCluster").items()
    assert global_cluster["Properties"]["StorageEncrypted"] is True
    assert global_cluster["Properties"]["DeletionProtection"] is True
    (writer,) = synth.resources(primary, "AWS::RDS::DBCluster").values()
    assert writer["Properties"]["GlobalClusterIdentifier"] == {"Ref": global_id}
    assert writer["Properties"]["MasterUsername"]
    assert writer["DeletionPolicy"] == "Snapshot"
    for region in synth.config.secondary_regions:
        (secondary,) = synth.resources(synth.stack(region, "data"), "AWS::RDS::DBCluster").values()
        props = secondary["Properties"]
        assert props["GlobalClusterIdentifier"] == global_cluster["Properties"]["GlobalClusterIdentifier"]
        assert "MasterUsername" not in props and "MasterUserPassword" not in props
        assert props["EnableGlobalWriteForwarding"] is True
        assert synth.resources(synth.stack(region, "data"), "AWS::RDS::DBInstance"), "secondary has instances"


def test_every_region_reaches_aurora_through_a_tls_only_rds_proxy(synth: Synth) -> None:
    for region in synth.config.regions:
        (proxy,) = synth.resources(synth.stack(region, "data"), "AWS::RDS::DBProxy").values()
        assert proxy["Properties"]["RequireTLS"] is True
        assert proxy["Properties"]["Auth"][0]["SecretArn"]


def test_every_valkey_group_is_multi_az_with_failover_tls_auth_and_encryption(synth: Synth) -> None:
    """Encryption is set on the group that founds (or stands outside) a Global Datastore; a joining
    member inherits it from the primary (see test_aws_rules for the rule and its source)."""
    groups = synth.all_resources("AWS::ElastiCache::ReplicationGroup")
    assert len({stack for stack, _, _ in groups}) == len(synth.config.regions)
    for stack, _, group in groups:
        props = group["Properties"]
        assert props["MultiAZEnabled"] is True, stack
        assert props["NumCacheClusters"] >= 2, stack
        assert props["KmsKeyId"], stack
        if "GlobalReplicationGroupId" not in props:
            assert props["AutomaticFailoverEnabled"] is True, stack
            assert props["AtRestEncryptionEnabled"] is True, stack
            assert props["TransitEncryptionEnabled"] is True, stack
            assert props["TransitEncryptionMode"] == "required", stack
        assert any("{{resolve:secretsmanager:" in s for s in strings(props["AuthToken"])), stack


def test_the_secondary_valkey_group_joins_the_primary_global_datastore(synth: Synth) -> None:
    primary = synth.stack(synth.config.primary_region, "data")
    ((datastore_id, datastore),) = synth.resources(
        primary, "AWS::ElastiCache::GlobalReplicationGroup"
    ).items()
    (member,) = datastore["Properties"]["Members"]
    assert member["Role"] == "PRIMARY"
    assert referenced_ids(member["ReplicationGroupId"]) <= set(
        synth.resources(primary, "AWS::ElastiCache::ReplicationGroup")
    )
    # The generated id is published in the primary region and read by each secondary at deploy time.
    (parameter,) = [
        p["Properties"]
        for p in synth.resources(primary, "AWS::SSM::Parameter").values()
        if p["Properties"].get("Name", "").endswith("/valkey-global-id")
    ]
    assert parameter["Value"] == {"Fn::GetAtt": [datastore_id, "GlobalReplicationGroupId"]}
    for region in synth.config.secondary_regions:
        (group,) = synth.resources(synth.stack(region, "data"), "AWS::ElastiCache::ReplicationGroup").values()
        (reader,) = referenced_ids(group["Properties"]["GlobalReplicationGroupId"])
        data = synth.stack(region, "data")
        assert data["Resources"][reader]["Type"] == "Custom::AWS"
        assert parameter["Name"] in str(data["Resources"][reader]["Properties"]["Create"])
        assert "Engine" not in group["Properties"], "members inherit the engine from the global datastore"


def test_every_queue_is_kms_encrypted_and_refuses_plain_http(synth: Synth) -> None:
    queues = synth.all_resources("AWS::SQS::Queue")
    assert len(queues) == 2 * len(synth.config.regions)
    for stack, logical_id, queue in queues:
        assert queue["Properties"]["KmsMasterKeyId"], (stack, logical_id)
        assert queue["Properties"]["FifoQueue"] is True
        policies = [
            p
            for _, _, p in synth.all_resources("AWS::SQS::QueuePolicy")
            if logical_id in referenced_ids(p["Properties"]["Queues"])
        ]
        denies = [
            s
            for p in policies
            for s in p["Properties"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny"
        ]
        assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies), logical_id


def test_every_vector_collection_is_encrypted_and_private(synth: Synth) -> None:
    for region in synth.config.regions:
        data = synth.stack(region, "data")
        (collection,) = synth.resources(data, "AWS::OpenSearchServerless::Collection").values()
        assert collection["Properties"]["Type"] == "VECTORSEARCH"
        name = collection["Properties"]["Name"]
        policies = {
            p["Properties"]["Type"]: p["Properties"]["Policy"]
            for p in synth.resources(data, "AWS::OpenSearchServerless::SecurityPolicy").values()
        }
        encryption = json.loads(policies["encryption"])
        assert encryption["Rules"][0]["Resource"] == [f"collection/{name}"]
        network = json.loads(policies["network"]["Fn::Sub"][0])
        assert network[0]["AllowFromPublic"] is False and network[0]["SourceVPCEs"]


def test_the_alarm_topics_are_encrypted(synth: Synth) -> None:
    topics = synth.all_resources("AWS::SNS::Topic")
    assert topics
    for stack, _, topic in topics:
        assert topic["Properties"]["KmsMasterKeyId"], stack
