"""Weak cross-region references: a stack publishes a value as an SSM parameter under a fixed name in
its own region; a stack in another region reads it at deploy time through a custom resource that
calls SSM GetParameter in the owner's region.

CDK's `crossRegionReferences` are strong: the producer's value cannot change while a consumer
imports it, and deploying the consumer deploys the producer too. Here nothing is locked: a
consumer reads whatever the parameter holds when the consumer is deployed (redeploy it after the
producer's value changes, e.g. a replaced collection), and each region's stacks deploy on their own.

"When the consumer is deployed" needs one more property: CloudFormation sends a custom resource an
Update only when its properties change ("Update request for CloudFormation custom resources",
https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requesttypes-update.html;
aws/aws-cdk discussion #21034), and a reader's properties (the parameter's name and region) never do,
so it would keep the value it read the first time for ever. Each reader carries the synthesis's
`ReadAt` (the context value `chatstack:read-at`, else the time of the synthesis), so every deploy
reads again; a consumer whose value did not change is then left as it was.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aws_cdk import CfnResource, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ssm as ssm
from aws_cdk import custom_resources as cr
from constructs import Construct

from cdk.nag import acknowledge, managed_policy

# CDK's one Lambda per stack behind every AwsCustomResource (its fixed construct id).
_PROVIDER_ID = "AWS679f53fac002430cb0da5b7982bd2287"
READ_AT_CONTEXT = "chatstack:read-at"
_SYNTHESIZED_AT = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parameter_name(deployment: str, region: str, key: str) -> str:
    """`/chatstack/<deployment>/<owner region>/<key>`: a name every region can compute."""
    return f"/chatstack/{deployment}/{region}/{key}"


def publish(scope: Construct, id: str, *, name: str, value: str, description: str) -> ssm.StringParameter:
    return ssm.StringParameter(scope, id, parameter_name=name, string_value=value, description=description)


class RegionalValue(Construct):
    """`value`: the parameter `name` of `owner_region`, read when this stack is deployed."""

    def __init__(self, scope: Construct, id: str, *, name: str, owner_region: str) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        call = cr.AwsSdkCall(
            service="SSM",
            action="GetParameter",
            parameters={"Name": name},
            region=owner_region,
            physical_resource_id=cr.PhysicalResourceId.of(f"{owner_region}:{name}"),
        )
        arn = f"arn:{stack.partition}:ssm:{owner_region}:{stack.account}:parameter{name}"
        self.reader = cr.AwsCustomResource(
            self,
            "Read",
            on_create=call,
            on_update=call,
            policy=cr.AwsCustomResourcePolicy.from_statements(
                [iam.PolicyStatement(actions=["ssm:GetParameter"], resources=[arn])]
            ),
            install_latest_aws_sdk=False,
        )
        read_at = str(self.node.try_get_context(READ_AT_CONTEXT) or _SYNTHESIZED_AT)
        resource = self.reader.node.find_child("Resource").node.default_child
        assert isinstance(resource, CfnResource)
        resource.add_property_override("ReadAt", read_at)  # passed to the provider, which ignores it
        self.value = self.reader.get_response_field("Parameter.Value")
        provider = stack.node.try_find_child(_PROVIDER_ID)
        if provider is not None:
            acknowledge(
                provider,
                [
                    {
                        "id": managed_policy("service-role/AWSLambdaBasicExecutionRole"),
                        "reason": "CDK's AwsCustomResource provider writes only its own logs with "
                        "the AWS-maintained minimum policy; its one grant is ssm:GetParameter on named "
                        "parameters.",
                    },
                    {
                        "id": "AwsSolutions-L1",
                        "reason": "The AwsCustomResource provider's Node.js runtime is chosen and "
                        "updated by aws-cdk-lib, not by this project.",
                    },
                ],
            )
