"""The regional VPC: three AZs, a NAT gateway per AZ, isolated subnets for the data stores, flow logs."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.constructs.retention import retention
from cdk.nag import acknowledge


class Network(Construct):
    """Public subnets hold the NAT gateways; Lambdas run in private subnets; data stores in isolated ones."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        cidr: str,
        availability_zones: list[str],
        nat_gateways: int,
        flow_log_retention_days: int,
    ) -> None:
        super().__init__(scope, id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(cidr),
            availability_zones=availability_zones,
            nat_gateways=nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(
                    name="app", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
                ),
                ec2.SubnetConfiguration(
                    name="data", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                ),
            ],
            restrict_default_security_group=True,
        )
        flow_logs = logs.LogGroup(
            self,
            "FlowLogs",
            retention=retention(flow_log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        acknowledge(
            self.vpc,
            [
                {
                    "id": "CloudFormation-Validate::W3010",
                    "reason": "AZs are named in the config "
                    "so that synth never asks the account which AZs it has (no lookups).",
                }
            ],
        )
        self.vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))

    @property
    def app_subnets(self) -> ec2.SubnetSelection:
        return ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)

    @property
    def data_subnets(self) -> ec2.SubnetSelection:
        return ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
