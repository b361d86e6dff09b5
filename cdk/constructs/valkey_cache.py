"""ElastiCache (Valkey) replication group: Multi-AZ with automatic failover, TLS required, AUTH token.

In the primary region it can found a Global Datastore; in a secondary region it can join one as a
read-only member that is promoted on regional failover. A joining member inherits engine, version,
node type and the encryption settings from the Global Datastore's primary: setting
AtRestEncryptionEnabled, TransitEncryptionEnabled or TransitEncryptionMode on it is refused with
InvalidParameterCombination (JOINING_MEMBER_OMITS below), so those are set only on a group that is
not a member. The member keeps its own region's KMS key, since a key is regional.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_kms as kms
from constructs import Construct

from cdk.nag import acknowledge

ENGINE = "valkey"
# What a replication group joining a Global Datastore must leave out (it takes them from the primary):
# https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-elasticache-replicationgroup.html
# (GlobalReplicationGroupId) and https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/Redis-Global-Datastores-Getting-Started.html
JOINING_MEMBER_OMITS = (
    "Engine",
    "EngineVersion",
    "CacheNodeType",
    "AtRestEncryptionEnabled",
    "TransitEncryptionEnabled",
    "TransitEncryptionMode",
    # Governed by the Global Datastore's AutomaticFailoverEnabled once a member. Unconfirmed whether
    # CreateReplicationGroup refuses it on a joining group; the Terraform AWS provider never sends it
    # there (internal/service/elasticache/replication_group.go, resourceReplicationGroupCreate), and
    # its acceptance test creates a secondary with MultiAZEnabled but without it, so leave it out.
    "AutomaticFailoverEnabled",
)
# AuthToken stays on a joining group: no AWS source refuses it there, the member's transit
# encryption (inherited) is on, and both regions read the same token from Secrets Manager.


class ValkeyCache(Construct):
    """One regional replication group (cluster mode off: one shard, a primary node plus replicas)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        key: kms.IKey,
        client_security_group: ec2.ISecurityGroup,
        replication_group_id: str,
        auth_token: str,
        engine_version: str,
        node_type: str,
        replicas: int,
        port: int,
        join_global_id: str | None = None,
        found_global_suffix: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.port = port
        self.security_group = ec2.SecurityGroup(
            self,
            "CacheSg",
            vpc=vpc,
            description="Valkey: TLS from the app",
            allow_all_outbound=False,
        )
        self.security_group.add_ingress_rule(client_security_group, ec2.Port.tcp(port), "app to Valkey")
        subnet_group = elasticache.CfnSubnetGroup(
            self,
            "Subnets",
            description="chatstack Valkey",
            subnet_ids=vpc.select_subnets(subnet_type=subnets.subnet_type).subnet_ids,
        )
        standalone = join_global_id is None
        self.replication_group = elasticache.CfnReplicationGroup(
            self,
            "Group",
            replication_group_id=replication_group_id,
            replication_group_description="chatstack hot path: connections, limits, windows, deltas",
            engine=ENGINE if standalone else None,
            engine_version=engine_version if standalone else None,
            cache_node_type=node_type if standalone else None,
            global_replication_group_id=join_global_id,
            num_cache_clusters=1 + replicas,
            multi_az_enabled=True,
            automatic_failover_enabled=True if standalone else None,
            at_rest_encryption_enabled=True if standalone else None,
            kms_key_id=key.key_arn,
            transit_encryption_enabled=True if standalone else None,
            transit_encryption_mode="required" if standalone else None,
            auth_token=auth_token,
            port=port,
            cache_subnet_group_name=subnet_group.ref,
            security_group_ids=[self.security_group.security_group_id],
            snapshot_retention_limit=1,
            # A Global Datastore member must not upgrade on its own.
            auto_minor_version_upgrade=False,
        )
        if not standalone:
            acknowledge(
                self.replication_group,
                [
                    {
                        "id": "AwsSolutions-AEC3",
                        "reason": "A Global Datastore member inherits encryption at rest and in "
                        "transit from the primary group, which sets both; ElastiCache refuses the flags "
                        "on a joining group (InvalidParameterCombination).",
                    }
                ],
            )
        self.node_ids = [f"{replication_group_id}-{i + 1:03d}" for i in range(1 + replicas)]
        self.global_datastore: elasticache.CfnGlobalReplicationGroup | None = None
        if found_global_suffix is not None:
            self.global_datastore = elasticache.CfnGlobalReplicationGroup(
                self,
                "GlobalDatastore",
                global_replication_group_id_suffix=found_global_suffix,
                global_replication_group_description="chatstack hot path across regions",
                automatic_failover_enabled=True,
                members=[
                    elasticache.CfnGlobalReplicationGroup.GlobalReplicationGroupMemberProperty(
                        replication_group_id=self.replication_group.ref,
                        replication_group_region=Stack.of(self).region,
                        role="PRIMARY",
                    )
                ],
            )

    @property
    def endpoint_address(self) -> str:
        return self.replication_group.attr_primary_end_point_address

    @property
    def url(self) -> str:
        """The TLS URL without credentials; the AUTH token comes from Secrets Manager at cold start."""
        return f"rediss://{self.endpoint_address}:{self.port}"
