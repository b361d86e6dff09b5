"""This region's Route 53 records for both API names, gated by a health check that exercises it.

Failover (the default): the primary region answers while healthy, the secondary takes over when
the primary's check fails. Failover fits the data tier: the Aurora writer and the writable Valkey
group live in one region, and WebSocket connections are pinned to a region anyway. Latency routing
is the active-active choice (each client goes to the nearest healthy region); secondary regions then
write through Aurora write forwarding and keep their own caches.
"""

from __future__ import annotations

from typing import Literal

import jsii
from aws_cdk import Duration
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_route53 as route53
from constructs import Construct


@jsii.implements(route53.IAliasRecordTarget)
class RegionalApiTarget:
    """An alias to a regional API Gateway domain that evaluates the target's health (failover needs it)."""

    def __init__(self, dns_name: str, hosted_zone_id: str) -> None:
        self._dns_name = dns_name
        self._hosted_zone_id = hosted_zone_id

    def bind(
        self, record: route53.IRecordSet, zone: route53.IHostedZone | None = None
    ) -> route53.AliasRecordTargetConfig:
        return route53.AliasRecordTargetConfig(
            dns_name=self._dns_name, hosted_zone_id=self._hosted_zone_id, evaluate_target_health=True
        )


class RegionalDnsRecords(Construct):
    """A health check on this region's REST health route and A/AAAA alias records for both names."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        zone: route53.IHostedZone,
        region: str,
        policy: Literal["failover", "latency"],
        is_primary: bool,
        health_host: str,
        health_path: str,
        domains: dict[str, tuple[str, apigwv2.IDomainName]],
    ) -> None:
        super().__init__(scope, id)
        self.health_check = route53.HealthCheck(
            self,
            "Health",
            type=route53.HealthCheckType.HTTPS,
            fqdn=health_host,
            resource_path=health_path,
            port=443,
            enable_sni=True,
            request_interval=Duration.seconds(10),
            failure_threshold=3,
            measure_latency=True,
        )
        failover = None
        if policy == "failover":
            failover = route53.Failover.PRIMARY if is_primary else route53.Failover.SECONDARY
        self.records: list[route53.ARecord] = []
        for label, (hostname, domain) in domains.items():
            self.records.append(
                route53.ARecord(
                    self,
                    f"{label}Record",
                    zone=zone,
                    record_name=hostname,
                    target=route53.RecordTarget.from_alias(
                        RegionalApiTarget(domain.regional_domain_name, domain.regional_hosted_zone_id)
                    ),
                    set_identifier=f"{label}-{region}",
                    health_check=self.health_check,
                    failover=failover,
                    region=region if policy == "latency" else None,
                )
            )
