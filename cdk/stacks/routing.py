"""Per-region part of global routing (only with a domain): certificates, regional custom domains,
a health check exercising the region, and this region's Route 53 records. Route 53 is global, so
each region adds its own records to the shared hosted zone and no region depends on another."""

from __future__ import annotations

from aws_cdk import CfnOutput
from aws_cdk import aws_route53 as route53
from constructs import Construct

from cdk.config import DeploymentConfig
from cdk.constructs.dns_records import RegionalDnsRecords
from cdk.constructs.regional_domains import RegionalDomains
from cdk.constructs.rest_api import HEALTH_PATH, READY_PATH
from cdk.stacks.api import ApiStack
from cdk.stacks.base import ChatstackStack


def health_path(config: DeploymentConfig, region: str) -> str:
    """What this region's health check must prove, by its role. The primary serves writes: deep
    /healthz (writer, cache, model). A secondary has no writer until promotion, so a check that needs
    one is always unhealthy, and Route 53 then answers with the primary whatever the primary's health
    (https://docs.aws.amazon.com/Route53/latest/APIReference/API_ResourceRecordSet.html, Failover):
    it proves /readyz (a read through the proxy's read-only endpoint and a cache PING)."""
    return HEALTH_PATH if config.is_primary(region) else READY_PATH


class RoutingStack(ChatstackStack):
    def __init__(self, scope: Construct, *, config: DeploymentConfig, region: str, api: ApiStack) -> None:
        super().__init__(scope, "routing", config=config, region=region)
        assert config.domain_name is not None and config.hosted_zone_id is not None
        zone = route53.HostedZone.from_hosted_zone_attributes(
            self, "Zone", hosted_zone_id=config.hosted_zone_id, zone_name=config.domain_name
        )
        self.domains = RegionalDomains(
            self,
            "Domains",
            zone=zone,
            websocket_name=config.websocket_domain,
            rest_name=config.rest_domain,
            websocket_api=api.websocket.api,
            websocket_stage=api.websocket.stage,
            rest_api=api.rest.api,
            rest_stage=api.rest.stage,
        )
        self.records = RegionalDnsRecords(
            self,
            "Dns",
            zone=zone,
            region=region,
            policy=config.routing_policy,
            is_primary=config.is_primary(region),
            health_host=api.rest.regional_host,
            health_path=health_path(config, region),
            domains={
                "WebSocket": (config.websocket_domain, self.domains.websocket_domain),
                "Rest": (config.rest_domain, self.domains.rest_domain),
            },
        )
        # `chatstack region` inverts the primary's check for a switchover; Route 53 generates the id.
        CfnOutput(self, "HealthCheckId", value=self.records.health_check.health_check_id)
