"""Aurora PostgreSQL Global Database, secondary region: a headless-credential cluster joining the global one.

Secondary clusters take no master credentials (they replicate the primary's storage); reads are
local and writes are forwarded to the primary writer (global write forwarding).
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_rds as rds
from constructs import Construct

from cdk.constructs.aurora_primary import ENGINE, engine_for, force_tls_parameters
from cdk.nag import acknowledge, managed_policy


class AuroraGlobalSecondary(Construct):
    """A read replica cluster of the global database, encrypted with this region's key."""

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
        engine_version: str,
        instance_class: str,
        readers: int,
        backup_retention_days: int,
        client_security_group: ec2.ISecurityGroup,
    ) -> None:
        super().__init__(scope, id)
        self.security_group = ec2.SecurityGroup(
            self,
            "ClusterSg",
            vpc=vpc,
            description="Aurora: PostgreSQL from the proxy and the app",
            allow_all_outbound=False,
        )
        self.security_group.add_ingress_rule(client_security_group, ec2.Port.tcp(5432), "app to Aurora")
        subnet_group = rds.CfnDBSubnetGroup(
            self,
            "Subnets",
            db_subnet_group_description="Aurora secondary",
            subnet_ids=vpc.select_subnets(subnet_type=subnets.subnet_type).subnet_ids,
        )
        parameters = rds.CfnDBClusterParameterGroup(
            self,
            "Parameters",
            description="chatstack secondary cluster",
            family=f"aurora-postgresql{engine_version.split('.')[0]}",
            parameters=force_tls_parameters(),
        )
        self.cluster = rds.CfnDBCluster(
            self,
            "Cluster",
            engine=ENGINE,
            engine_version=engine_version,
            db_cluster_identifier=cluster_id,
            global_cluster_identifier=global_cluster_id,
            db_subnet_group_name=subnet_group.ref,
            db_cluster_parameter_group_name=parameters.ref,
            vpc_security_group_ids=[self.security_group.security_group_id],
            storage_encrypted=True,
            kms_key_id=key.key_arn,
            deletion_protection=True,
            backup_retention_period=backup_retention_days,
            copy_tags_to_snapshot=True,
            enable_iam_database_authentication=True,
            enable_cloudwatch_logs_exports=["postgresql"],
            enable_global_write_forwarding=True,
        )
        # A secondary's data lives in the global storage and the primary's snapshot.
        self.cluster.apply_removal_policy(RemovalPolicy.DESTROY)
        monitoring = iam.Role(
            self,
            "MonitoringRole",
            assumed_by=iam.ServicePrincipal("monitoring.rds.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AmazonRDSEnhancedMonitoringRole")
            ],
        )
        self.instances = [
            rds.CfnDBInstance(
                self,
                "Writer" if i == 0 else f"Reader{i}",
                engine=ENGINE,
                db_cluster_identifier=self.cluster.ref,
                db_instance_class=instance_class,
                db_subnet_group_name=subnet_group.ref,
                publicly_accessible=False,
                enable_performance_insights=True,
                performance_insights_kms_key_id=key.key_arn,
                monitoring_interval=60,
                monitoring_role_arn=monitoring.role_arn,
                auto_minor_version_upgrade=False,
            )
            for i in range(1 + readers)
        ]
        self.imported = rds.DatabaseCluster.from_database_cluster_attributes(
            self,
            "Imported",
            cluster_identifier=self.cluster.ref,
            engine=engine_for(engine_version),
            security_groups=[self.security_group],
            port=5432,
        )
        acknowledge(
            self,
            [
                {
                    "id": "AwsSolutions-RDS11",
                    "reason": "Port 5432 kept for PostgreSQL tooling; only the "
                    "proxy and app security group may connect, and TLS plus credentials are required.",
                },
                {
                    "id": managed_policy("service-role/AmazonRDSEnhancedMonitoringRole"),
                    "reason": "AmazonRDSEnhancedMonitoringRole is the AWS-maintained "
                    "policy RDS documents for enhanced monitoring; it grants only CloudWatch Logs writes.",
                },
            ],
        )
