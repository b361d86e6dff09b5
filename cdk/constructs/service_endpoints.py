"""VPC endpoints for the AWS APIs the Lambdas call, so that traffic stays off the NAT gateways.

Deliberately absent: `execute-api`. With private DNS it captures every *.execute-api name in the VPC
and serves only private APIs, so the worker's `@connections` calls to this public WebSocket API
would fail with 403; those calls go through the NAT gateways instead.
"""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

INTERFACE_SERVICES = {
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "SageMakerRuntime": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,
    "Kms": ec2.InterfaceVpcEndpointAwsService.KMS,
    "XRay": ec2.InterfaceVpcEndpointAwsService.XRAY,
}


class ServiceEndpoints(Construct):
    """Interface endpoints in the app subnets (HTTPS from the VPC only) and the free S3 gateway."""

    def __init__(
        self, scope: Construct, id: str, *, vpc: ec2.IVpc, cidr: str, subnets: ec2.SubnetSelection
    ) -> None:
        super().__init__(scope, id)
        self.security_group = ec2.SecurityGroup(
            self,
            "EndpointsSg",
            vpc=vpc,
            description="HTTPS from the VPC to AWS API endpoints",
            allow_all_outbound=False,
        )
        self.security_group.add_ingress_rule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(443), "VPC to APIs")
        self.endpoints = {
            name: vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=subnets,
                security_groups=[self.security_group],
                private_dns_enabled=True,
                open=False,
            )
            for name, service in INTERFACE_SERVICES.items()
        }
        vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
