"""Every Lambda function of the wiring module, built from one shared code asset.

Functions are made by iterating `lambdas.wiring.FUNCTIONS`, so a function added there is deployed
without touching this file. Each gets its own role (grants differ per function), its own log group,
X-Ray tracing, the app subnets and the one settings environment (`CHATSTACK_*`, see lambdas/config.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.bundling import ARCHITECTURE, RUNTIME
from cdk.constructs.retention import retention
from cdk.nag import acknowledge, managed_policy, wildcard
from lambdas import wiring


def lambda_handler_path(function: wiring.Function) -> str:
    """`package.module:function` (wiring) -> `package.module.function` (the Lambda runtime's form)."""
    return f"{function.module}.{function.attribute}"


class ChatFunctions(Construct):
    """`functions[name]` for every entry of `specs` (default: `wiring.FUNCTIONS`)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        code: Callable[[wiring.Function], lambda_.Code],
        name_prefix: str,
        environment: Mapping[str, str],
        log_retention_days: int,
        vpc: ec2.IVpc | None = None,
        subnets: ec2.SubnetSelection | None = None,
        security_group: ec2.ISecurityGroup | None = None,
        specs: Sequence[wiring.Function] = wiring.FUNCTIONS,
    ) -> None:
        super().__init__(scope, id)
        self.functions: dict[str, lambda_.Function] = {}
        for spec in specs:
            construct_id = "".join(part.title() for part in spec.name.split("_"))
            function_name = f"{name_prefix}-{spec.name.replace('_', '-')}"
            log_group = logs.LogGroup(
                self,
                f"{construct_id}Logs",
                log_group_name=f"/aws/lambda/{function_name}",
                retention=retention(log_retention_days),
                removal_policy=RemovalPolicy.DESTROY,
            )
            function = lambda_.Function(
                self,
                construct_id,
                function_name=function_name,
                description=spec.description[:256],
                runtime=RUNTIME,
                architecture=ARCHITECTURE,
                code=code(spec),
                handler=lambda_handler_path(spec),
                memory_size=spec.memory_mb,
                timeout=Duration.seconds(spec.timeout_s),
                environment=dict(environment),
                tracing=lambda_.Tracing.ACTIVE,
                log_group=log_group,
                vpc=vpc,
                vpc_subnets=subnets,
                security_groups=[security_group] if security_group is not None else None,
            )
            self.functions[spec.name] = function
        acknowledge(
            self,
            [
                {
                    "id": managed_policy("service-role/AWSLambdaBasicExecutionRole"),
                    "reason": "The AWS-maintained minimum for a function to write its own logs.",
                },
                {
                    "id": managed_policy("service-role/AWSLambdaVPCAccessExecutionRole"),
                    "reason": "The "
                    "AWS-maintained minimum for a function to attach its network interfaces in the VPC.",
                },
                {
                    "id": wildcard("Resource::*"),
                    "reason": "X-Ray PutTraceSegments and PutTelemetryRecords "
                    "support no resource ARN; every data-plane grant names this deployment's resources.",
                },
                {
                    "id": "AwsSolutions-L1",
                    "reason": "Python 3.12 is the runtime the bundled manylinux wheels "
                    "are built for (cdk/bundling.py); it moves together with PYTHON_VERSION there.",
                },
            ],
        )

    def __getitem__(self, name: str) -> lambda_.Function:
        return self.functions[name]

    def add_environment(self, values: Mapping[str, str]) -> None:
        for function in self.functions.values():
            for key, value in values.items():
                function.add_environment(key, value)
