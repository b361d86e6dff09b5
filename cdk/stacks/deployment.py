"""Composes every stack of every region for one deployment config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jsii
from aws_cdk import App, Aspects, CfnResource, IAspect, TagManager, Tags
from aws_cdk import aws_lambda as lambda_
from constructs import IConstruct

from cdk.config import DeploymentConfig
from cdk.stacks.api import ApiStack, Issuer
from cdk.stacks.base import ChatstackStack
from cdk.stacks.data import DataStack
from cdk.stacks.finance import FinanceStack
from cdk.stacks.identity import IdentityStack
from cdk.stacks.inference import InferenceStack
from cdk.stacks.network import NetworkStack
from cdk.stacks.observability import ObservabilityStack
from cdk.stacks.routing import RoutingStack
from lambdas import wiring

# CloudFormation rejects Tags on these types.
UNTAGGABLE = ["AWS::RDS::DBProxyTargetGroup", "AWS::ElastiCache::GlobalReplicationGroup"]


@dataclass
class RegionStacks:
    network: NetworkStack
    data: DataStack
    inference: InferenceStack
    api: ApiStack
    observability: ObservabilityStack
    routing: RoutingStack | None


@dataclass
class Deployment:
    regions: dict[str, RegionStacks] = field(default_factory=dict)
    identity: IdentityStack | None = None
    finance: FinanceStack | None = None

    @property
    def stacks(self) -> list[ChatstackStack]:
        found: list[ChatstackStack] = [s for s in (self.identity, self.finance) if s is not None]
        for r in self.regions.values():
            found += [
                s
                for s in (r.network, r.data, r.inference, r.api, r.observability, r.routing)
                if s is not None
            ]
        return found


def add_deployment(
    app: App, config: DeploymentConfig, code: Callable[[wiring.Function], lambda_.Code]
) -> Deployment:
    """`code()` makes the function code for one stack (an asset binds to one stack; staging is shared)."""
    deployment = Deployment()
    if config.uses_cognito:
        deployment.identity = IdentityStack(app, config=config, code=code)
        cognito = deployment.identity.issuer
        issuer = Issuer(
            url=cognito.issuer_url,
            jwks_url=cognito.jwks_url,
            audience=cognito.audience,
            published_in=config.primary_region,
        )
    else:
        url = str(config.identity.issuer)
        issuer = Issuer(
            url=url,
            jwks_url=config.identity.jwks_url or url + "/.well-known/jwks.json",
            audience=str(config.identity.audience),
        )
    # Every region's data stack first: the REST function of each region writes every region's collection.
    tiers: dict[str, tuple[NetworkStack, DataStack]] = {}
    primary_data: DataStack | None = None
    for region in config.regions:
        network = NetworkStack(app, config=config, region=region)
        data = DataStack(app, config=config, region=region, network=network, primary=primary_data)
        if primary_data is None:
            primary_data = data
        else:
            # Deploy order only: the secondary reads the primary's parameters when it deploys.
            data.add_stack_dependency(primary_data)
        tiers[region] = (network, data)
    all_data = {region: data for region, (_, data) in tiers.items()}
    primary_api: ApiStack | None = None
    for region, (network, data) in tiers.items():
        inference = InferenceStack(app, config=config, region=region, key=data.key)
        api = ApiStack(
            app,
            config=config,
            region=region,
            network=network,
            data=data,
            all_data=all_data,
            inference=inference,
            issuer=issuer,
            code=code,
        )
        # Deploy order only (no exports): the API stack reads other regions' parameters weakly.
        for other in all_data.values():
            if other is not data:
                api.add_stack_dependency(other)
        if deployment.identity is not None:
            api.add_stack_dependency(deployment.identity)
        observability = ObservabilityStack(
            app, config=config, region=region, data=data, inference=inference, api=api, code=code
        )
        if primary_api is None:
            primary_api = api
        else:
            observability.add_stack_dependency(primary_api)  # deploy order: it reads the primary's health URL
        routing = RoutingStack(app, config=config, region=region, api=api) if config.domain_name else None
        deployment.regions[region] = RegionStacks(network, data, inference, api, observability, routing)
    deployment.finance = FinanceStack(app, config=config)
    for key, value in config.cost_tags.items():
        Tags.of(app).add(key, value, exclude_resource_types=UNTAGGABLE)
    Aspects.of(app).add(TagRawResources(config.cost_tags))
    return deployment


@jsii.implements(IAspect)
class TagRawResources:
    """Tags resources that CDK writes as raw CfnResource (custom-resource providers), which `Tags` skips."""

    def __init__(self, tags: dict[str, str]) -> None:
        self._tags = [{"Key": key, "Value": value} for key, value in tags.items()]

    def visit(self, node: IConstruct) -> None:
        if (
            isinstance(node, CfnResource)
            and node.cfn_resource_type in RAW_TAGGABLE
            and not TagManager.is_taggable(node)
        ):
            node.add_property_override("Tags", self._tags)


RAW_TAGGABLE = ("AWS::IAM::Role", "AWS::Lambda::Function")
