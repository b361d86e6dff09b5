"""API Gateway's account-level CloudWatch role for this region, required for WebSocket access logs."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from constructs import Construct

from cdk.nag import acknowledge, wildcard


class ApiGatewayLogging(Construct):
    """Sets the region's API Gateway CloudWatch role (one per account and region)."""

    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            description="API Gateway writes access and execution logs",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:DescribeLogGroups",
                    "logs:DescribeLogStreams",
                    "logs:PutLogEvents",
                    "logs:GetLogEvents",
                    "logs:FilterLogEvents",
                ],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name="*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        self.account = apigw.CfnAccount(self, "Account", cloud_watch_role_arn=self.role.role_arn)
        self.account.node.add_dependency(self.role)
        acknowledge(
            self.role,
            [
                {
                    "id": wildcard(
                        f"Resource::arn:<AWS::Partition>:logs:{stack.region}:{stack.account}:log-group:*"
                    ),
                    "reason": "API Gateway execution log groups are named by API id and "
                    "stage at run time (API-Gateway-Execution-Logs_*), so the role needs "
                    "log groups of this region.",
                }
            ],
        )
