"""RDS Proxy in front of a region's Aurora cluster: Lambdas pool through it instead of opening
thousands of connections on the database.

Besides its default read/write endpoint the proxy gets a read-only endpoint. On an Aurora Global
Database secondary the read/write endpoint has no writer until promotion ("The target group doesn't
have any associated read/write instances"), so a standby region proves it can serve through the
read-only endpoint (https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/rds-proxy-gdb.html).

Clients authenticate to the proxy with IAM (`rds-db:connect`), never with the database password: the
proxy alone reads the secret (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy-connecting.html).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from cdk.nag import acknowledge


class DatabaseProxy(Construct):
    """TLS-only proxy in the data subnets, reachable from the app security group only."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        cluster: rds.IDatabaseCluster,
        cluster_security_group: ec2.ISecurityGroup,
        secret: secretsmanager.ISecret,
        client_security_group: ec2.ISecurityGroup,
        proxy_name: str,
        max_connections_percent: int,
    ) -> None:
        super().__init__(scope, id)
        self.security_group = ec2.SecurityGroup(
            self,
            "ProxySg",
            vpc=vpc,
            description="RDS Proxy: PostgreSQL from the app",
            allow_all_outbound=False,
        )
        self.security_group.add_ingress_rule(client_security_group, ec2.Port.tcp(5432), "app to proxy")
        self.security_group.add_egress_rule(cluster_security_group, ec2.Port.tcp(5432), "proxy to Aurora")
        cluster_security_group.add_ingress_rule(self.security_group, ec2.Port.tcp(5432), "proxy to Aurora")
        self.proxy = rds.DatabaseProxy(
            self,
            "Proxy",
            db_proxy_name=proxy_name,
            proxy_target=rds.ProxyTarget.from_cluster(cluster),
            secrets=[secret],
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            require_tls=True,
            # Clients sign in with IAM auth tokens: no function reads the master secret (only the
            # proxy does), and each function's role names the one database user it may be.
            iam_auth=True,
            idle_client_timeout=Duration.minutes(30),
            max_connections_percent=max_connections_percent,
            debug_logging=False,
        )
        reader = rds.CfnDBProxyEndpoint(
            self,
            "ReaderEndpoint",
            db_proxy_endpoint_name=f"{proxy_name}-ro",
            db_proxy_name=self.proxy.db_proxy_name,
            vpc_subnet_ids=vpc.select_subnets(subnet_type=subnets.subnet_type).subnet_ids,
            vpc_security_group_ids=[self.security_group.security_group_id],
            target_role="READ_ONLY",
        )
        self.reader_endpoint = reader.attr_endpoint
        acknowledge(
            self.proxy,
            [
                {
                    "id": "AwsSolutions-IAM5",
                    "reason": "The proxy role may read only its one database secret; "
                    "CDK adds the KMS decrypt wildcard scoped by kms:ViaService to Secrets Manager.",
                }
            ],
        )
