"""Regional custom domain names for both APIs, with this region's ACM certificate.

The same names exist in every region (API Gateway allows it), so Route 53 can point one name at
whichever region is serving. WebSocket APIs accept only regional domains and TLS 1.2.
"""

from __future__ import annotations

from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_route53 as route53
from constructs import Construct

from lambdas import wiring


class RegionalDomains(Construct):
    """`websocket_domain` and `rest_domain`, mapped to the WebSocket stage and the HTTP API."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        zone: route53.IHostedZone,
        websocket_name: str,
        rest_name: str,
        websocket_api: apigwv2.IWebSocketApi,
        websocket_stage: apigwv2.IWebSocketStage,
        rest_api: apigwv2.IHttpApi,
        rest_stage: apigwv2.IStage,
    ) -> None:
        super().__init__(scope, id)
        self.certificate = acm.Certificate(
            self,
            "Certificate",
            domain_name=websocket_name,
            subject_alternative_names=[rest_name],
            validation=acm.CertificateValidation.from_dns(zone),
        )
        self.websocket_domain = apigwv2.DomainName(
            self,
            "WebSocketDomain",
            domain_name=websocket_name,
            certificate=self.certificate,
            security_policy=apigwv2.SecurityPolicy.TLS_1_2,
        )
        self.rest_domain = apigwv2.DomainName(
            self,
            "RestDomain",
            domain_name=rest_name,
            certificate=self.certificate,
            security_policy=apigwv2.SecurityPolicy.TLS_1_2,
        )
        # wss://ws.example.com/v1 keeps the stage in the path, as the execute-api URL does.
        apigwv2.ApiMapping(
            self,
            "WebSocketMapping",
            api=websocket_api,
            domain_name=self.websocket_domain,
            stage=websocket_stage,
            api_mapping_key=wiring.STAGE_NAME,
        )
        apigwv2.ApiMapping(self, "RestMapping", api=rest_api, domain_name=self.rest_domain, stage=rest_stage)
