"""OpenSearch Serverless VECTORSEARCH collection with its encryption and network policies.

Reachable through an OpenSearch Serverless VPC endpoint in this region's VPC; who may read and
write its indexes is a data access policy (`VectorAccessPolicy`) made where the roles are. With
`cross_region_writes` the collection endpoint is also reachable from outside that VPC, because a VPC
endpoint serves only collections of its own region and another region's REST function must write
here: every request is still SigV4-signed and allowed only for the roles the data access policy names.
"""

from __future__ import annotations

import json

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_opensearchserverless as aoss
from constructs import Construct


class VectorCollection(Construct):
    """One collection per region; ingestion writes to each region's collection."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        collection_name: str,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        client_security_group: ec2.ISecurityGroup,
        cross_region_writes: bool = False,
    ) -> None:
        super().__init__(scope, id)
        self.collection_name = collection_name
        resource = [f"collection/{collection_name}"]
        encryption = aoss.CfnSecurityPolicy(
            self,
            "Encryption",
            name=f"{collection_name}-enc",
            type="encryption",
            description="Encrypt the vector collection at rest",
            policy=json.dumps(
                {"Rules": [{"ResourceType": "collection", "Resource": resource}], "AWSOwnedKey": True}
            ),
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "EndpointSg",
            vpc=vpc,
            description="OpenSearch Serverless endpoint: HTTPS from the app",
            allow_all_outbound=False,
        )
        self.security_group.add_ingress_rule(client_security_group, ec2.Port.tcp(443), "app to OpenSearch")
        self.vpc_endpoint = aoss.CfnVpcEndpoint(
            self,
            "Endpoint",
            name=f"{collection_name}-vpce",
            vpc_id=vpc.vpc_id,
            subnet_ids=vpc.select_subnets(subnet_type=subnets.subnet_type).subnet_ids,
            security_group_ids=[self.security_group.security_group_id],
        )
        network_document = [
            {
                "Rules": [{"ResourceType": "collection", "Resource": resource}],
                "AllowFromPublic": False,
                "SourceVPCEs": ["${Vpce}"],
            }
        ]
        if cross_region_writes:
            network_document.append(
                {
                    "Rules": [{"ResourceType": "collection", "Resource": resource}],
                    "AllowFromPublic": True,
                    "Description": "Other regions' REST functions write here (SigV4 + data access policy)",
                }
            )
        network = aoss.CfnSecurityPolicy(
            self,
            "Network",
            name=f"{collection_name}-net",
            type="network",
            description="Collection reachable only from this deployment's VPC endpoint",
            policy=json.dumps(network_document),
        )
        network.add_property_override(
            "Policy", {"Fn::Sub": [json.dumps(network_document), {"Vpce": self.vpc_endpoint.ref}]}
        )
        self.collection = aoss.CfnCollection(
            self,
            "Collection",
            name=collection_name,
            type="VECTORSEARCH",
            standby_replicas="ENABLED",
            description="chatstack document chunks (k-NN)",
        )
        # The encryption policy must exist before the collection, or creation fails.
        self.collection.node.add_dependency(encryption)
        self.collection.node.add_dependency(network)

    @property
    def endpoint(self) -> str:
        return self.collection.attr_collection_endpoint

    @property
    def arn(self) -> str:
        return self.collection.attr_arn
