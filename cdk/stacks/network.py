"""Per-region network stack: the VPC, the AWS API endpoints and the app security group."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from cdk.config import DeploymentConfig
from cdk.constructs.network import Network
from cdk.constructs.service_endpoints import ServiceEndpoints
from cdk.stacks.base import ChatstackStack


class NetworkStack(ChatstackStack):
    def __init__(self, scope: Construct, *, config: DeploymentConfig, region: str) -> None:
        super().__init__(scope, "network", config=config, region=region)
        cfg = config.network
        self.network = Network(
            self,
            "Network",
            cidr=cfg.cidr,
            availability_zones=[region + suffix for suffix in cfg.availability_zone_suffixes],
            nat_gateways=cfg.nat_gateways,
            flow_log_retention_days=cfg.flow_log_retention_days,
        )
        self.vpc = self.network.vpc
        self.endpoints = ServiceEndpoints(
            self, "Endpoints", vpc=self.vpc, cidr=cfg.cidr, subnets=self.network.app_subnets
        )
        # The Lambdas' group: data stores admit it by name, so no cross-stack rule is ever needed.
        self.app_security_group = ec2.SecurityGroup(
            self,
            "AppSg",
            vpc=self.vpc,
            description="chatstack functions",
            allow_all_outbound=True,
        )
