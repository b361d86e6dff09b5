"""Global routing: regional custom domains for both APIs in every region, Route 53 failover records
gated by health checks that call the region's REST health route."""

from __future__ import annotations

from infra_tests.conftest import Synth
from infra_tests.helpers import render


def test_every_region_serves_both_api_names_on_regional_tls_domains(synth: Synth) -> None:
    names = {synth.config.websocket_domain, synth.config.rest_domain}
    for region in synth.config.regions:
        routing = synth.stack(region, "routing")
        domains = synth.resources(routing, "AWS::ApiGatewayV2::DomainName").values()
        assert {d["Properties"]["DomainName"] for d in domains} == names
        for domain in domains:
            (config,) = domain["Properties"]["DomainNameConfigurations"]
            assert config["EndpointType"] == "REGIONAL" and config["SecurityPolicy"] == "TLS_1_2"
        (certificate,) = synth.resources(routing, "AWS::CertificateManager::Certificate").values()
        assert certificate["Properties"]["ValidationMethod"] == "DNS"
        assert {o["HostedZoneId"] for o in certificate["Properties"]["DomainValidationOptions"]} == {
            synth.config.hosted_zone_id
        }
        assert len(synth.resources(routing, "AWS::ApiGatewayV2::ApiMapping")) == 2


def test_records_fail_over_from_the_primary_on_a_health_check_that_exercises_the_region(synth: Synth) -> None:
    roles = {}
    for region in synth.config.regions:
        routing = synth.stack(region, "routing")
        ((check_id, check),) = synth.resources(routing, "AWS::Route53::HealthCheck").items()
        config = check["Properties"]["HealthCheckConfig"]
        expected = "/healthz" if synth.config.is_primary(region) else "/readyz"
        assert config["Type"] == "HTTPS" and config["ResourcePath"] == expected
        assert render(config["FullyQualifiedDomainName"]).endswith(f".execute-api.{region}.amazonaws.com")
        records = synth.resources(routing, "AWS::Route53::RecordSet").values()
        assert {r["Properties"]["Name"] for r in records} == {
            f"{synth.config.websocket_domain}.",
            f"{synth.config.rest_domain}.",
        }
        for record in records:
            props = record["Properties"]
            assert props["HostedZoneId"] == synth.config.hosted_zone_id
            assert props["HealthCheckId"] == {"Ref": check_id}
            assert props["AliasTarget"]["EvaluateTargetHealth"] is True
            roles.setdefault(region, set()).add(props["Failover"])
    assert roles == {
        synth.config.primary_region: {"PRIMARY"},
        **{r: {"SECONDARY"} for r in synth.config.secondary_regions},
    }
