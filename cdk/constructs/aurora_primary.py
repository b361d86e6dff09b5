"""Aurora PostgreSQL Global Database, primary region: the global cluster and its writer cluster.

The master credentials are generated into Secrets Manager and replicated to every secondary region,
where each region's RDS Proxy reads its local replica. The replica's ARN carries the same random
suffix as the original, so the secret's `name-suffix` is published as an SSM parameter whose value a
secondary stack can reference (a cross-region reference must name a resource attribute, not an
expression evaluated in the consuming region).
"""

from __future__ import annotations

from aws_cdk import Duration, Fn, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from cdk.nag import acknowledge, managed_policy

MASTER_USERNAME = "chatstack_admin"
ENGINE = "aurora-postgresql"


def engine_for(version: str) -> rds.IClusterEngine:
    return rds.DatabaseClusterEngine.aurora_postgres(
        version=rds.AuroraPostgresEngineVersion.of(version, version.split(".")[0])
    )


def force_tls_parameters() -> dict[str, str]:
    """Cluster parameters every member uses: TLS required for every client connection."""
    return {"rds.force_ssl": "1"}


class AuroraGlobalPrimary(Construct):
    """The global cluster plus the primary (writer) cluster, encrypted, deletion-protected, backed up."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        key: kms.IKey,
        global_cluster_id: str,
        cluster_id: str,
        secret_name: str,
        replica_regions: list[str],
        engine_version: str,
        instance_class: str,
        readers: int,
        backup_retention_days: int,
        database_name: str,
        client_security_group: ec2.ISecurityGroup,
    ) -> None:
        super().__init__(scope, id)
        self.global_cluster = rds.CfnGlobalCluster(
            self,
            "Global",
            global_cluster_identifier=global_cluster_id,
            engine=ENGINE,
            engine_version=engine_version,
            storage_encrypted=True,
            deletion_protection=True,
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "ClusterSg",
            vpc=vpc,
            description="Aurora: PostgreSQL from the proxy and the app",
            allow_all_outbound=False,
        )
        self.security_group.add_ingress_rule(client_security_group, ec2.Port.tcp(5432), "app to Aurora")
        instance_type = ec2.InstanceType(instance_class.removeprefix("db."))
        self.cluster = rds.DatabaseCluster(
            self,
            "Cluster",
            engine=engine_for(engine_version),
            cluster_identifier=cluster_id,
            credentials=rds.Credentials.from_generated_secret(
                MASTER_USERNAME,
                secret_name=secret_name,
                replica_regions=[secretsmanager.ReplicaRegion(region=r) for r in replica_regions],
                exclude_characters=" %+~`#$&*()|[]{}:;<>?!'/@\"\\",
            ),
            default_database_name=database_name,
            writer=rds.ClusterInstance.provisioned(
                "Writer",
                instance_type=instance_type,
                enable_performance_insights=True,
                performance_insight_encryption_key=key,
            ),
            readers=[
                rds.ClusterInstance.provisioned(
                    f"Reader{i + 1}",
                    instance_type=instance_type,
                    enable_performance_insights=True,
                    performance_insight_encryption_key=key,
                )
                for i in range(readers)
            ],
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            storage_encrypted=True,
            storage_encryption_key=key,
            deletion_protection=True,
            backup=rds.BackupProps(retention=Duration.days(backup_retention_days)),
            removal_policy=RemovalPolicy.SNAPSHOT,
            iam_authentication=True,
            copy_tags_to_snapshot=True,
            cloudwatch_logs_exports=["postgresql"],
            monitoring_interval=Duration.seconds(60),
            parameters=force_tls_parameters(),
        )
        cfn_cluster = self.cluster.node.default_child
        assert isinstance(cfn_cluster, rds.CfnDBCluster)
        cfn_cluster.global_cluster_identifier = self.global_cluster.ref
        cfn_cluster.node.add_dependency(self.global_cluster)
        assert self.cluster.secret is not None
        self.secret = self.cluster.secret
        self.secret_id_parameter = ssm.StringParameter(
            self,
            "SecretId",
            description="name-suffix of the Aurora master secret; its replicas share it in every region",
            string_value=Fn.select(6, Fn.split(":", self.secret.secret_arn)),
        )
        acknowledge(
            self,
            [
                {
                    "id": "AwsSolutions-SMG4",
                    "reason": "The Aurora Global master password is shared by every "
                    "region's proxy through secret replicas; rotate it with the runbook in docs/deploy.md.",
                },
                {
                    "id": managed_policy("service-role/AmazonRDSEnhancedMonitoringRole"),
                    "reason": "The "
                    "AWS-maintained policy RDS documents for enhanced monitoring; "
                    "it only writes RDSOSMetrics logs.",
                },
                {
                    "id": "AwsSolutions-RDS11",
                    "reason": "Port 5432 kept for PostgreSQL tooling; only the "
                    "proxy and app security group may connect, and TLS plus credentials are required.",
                },
            ],
        )
