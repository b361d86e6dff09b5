"""OpenSearch Serverless data access policy: which roles may use which collection's indexes."""

from __future__ import annotations

import json
from collections.abc import Sequence

from aws_cdk import aws_iam as iam
from aws_cdk import aws_opensearchserverless as aoss
from constructs import Construct

INDEX_PERMISSIONS = [
    "aoss:CreateIndex",
    "aoss:DescribeIndex",
    "aoss:UpdateIndex",
    "aoss:ReadDocument",
    "aoss:WriteDocument",
]


class VectorAccessPolicy(Construct):
    """Grants index read/write in one collection to the given roles and to `principals` (role ARNs, e.g.
    other regions' roles named by their fixed names); IAM still needs aoss:APIAccessAll."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        collection_name: str,
        roles: list[iam.IRole],
        principals: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, id)
        arns = [role.role_arn for role in roles] + list(principals)
        document = [
            {
                "Rules": [
                    {
                        "ResourceType": "index",
                        "Resource": [f"index/{collection_name}/*"],
                        "Permission": INDEX_PERMISSIONS,
                    },
                    {
                        "ResourceType": "collection",
                        "Resource": [f"collection/{collection_name}"],
                        "Permission": ["aoss:DescribeCollectionItems"],
                    },
                ],
                "Principal": [f"${{Role{i}}}" for i in range(len(arns))],
                "Description": "chatstack functions",
            }
        ]
        self.policy = aoss.CfnAccessPolicy(
            self,
            "Policy",
            name=f"{collection_name}-data",
            type="data",
            policy=json.dumps(document),
            description="chatstack functions read and write document chunks",
        )
        variables = {f"Role{i}": arn for i, arn in enumerate(arns)}
        self.policy.add_property_override("Policy", {"Fn::Sub": [json.dumps(document), variables]})
