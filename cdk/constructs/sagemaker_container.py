"""What every SageMaker serving container needs, shared by the LMI and the embedding endpoints: an
execution role allowed to pull its one ECR repository, write its endpoint's logs and publish its
metrics, and the SageMaker model that runs the image."""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from cdk.nag import acknowledge, wildcard


def container_role(scope: Construct, *, description: str) -> iam.Role:
    return iam.Role(
        scope,
        "ExecutionRole",
        assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
        description=description,
    )


def grant_container_runtime(
    role: iam.Role,
    *,
    image_uri: str,
    registry_account: str,
    log_group_prefix: str,
    extra_acknowledgements: list[dict[str, Any]] | None = None,
) -> None:
    """ECR pull on the image's repository only, the endpoint's log groups, metrics by namespace."""
    stack = Stack.of(role)
    region = stack.region
    repository = image_uri.split("/", 1)[1].split(":", 1)[0]
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            resources=[f"arn:{stack.partition}:ecr:{region}:{registry_account}:repository/{repository}"],
        )
    )
    role.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
    role.add_to_policy(
        iam.PolicyStatement(
            actions=[
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "logs:DescribeLogStreams",
            ],
            resources=[
                stack.format_arn(
                    service="logs",
                    resource="log-group",
                    resource_name=f"{log_group_prefix}/*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "AWS/SageMaker"]}},
        )
    )
    acknowledge(
        role,
        [
            {
                "id": wildcard("Resource::*"),
                "reason": "ecr:GetAuthorizationToken and "
                "cloudwatch:PutMetricData support no resource ARN; metrics are limited by namespace.",
            },
            {
                "id": wildcard(
                    f"Resource::arn:<AWS::Partition>:logs:{region}:{stack.account}:log-group:{log_group_prefix}/*"
                ),
                "reason": "SageMaker names the endpoint's log groups and streams at run time "
                f"under {log_group_prefix}.",
            },
            *(extra_acknowledgements or []),
        ],
    )


def container_model(
    scope: Construct, *, role: iam.Role, image_uri: str, environment: dict[str, str]
) -> sagemaker.CfnModel:
    model = sagemaker.CfnModel(
        scope,
        "Model",
        execution_role_arn=role.role_arn,
        primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
            image=image_uri, environment=environment, mode="SingleModel"
        ),
    )
    model.node.add_dependency(role)
    return model
