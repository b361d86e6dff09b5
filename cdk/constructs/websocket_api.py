"""The WebSocket chat API: every route of the wiring module bound to its function, the REQUEST
authorizer on `$connect` only, one throttled stage with access logs.

No identity sources are declared on the authorizer on purpose: API Gateway answers 401 without
calling the authorizer unless *every* declared source is present, and a browser sends `?token=`
while a service sends `x-api-key`, never both. The authorizer itself reads
`wiring.AUTHORIZER_IDENTITY_SOURCES` and rejects a request carrying neither.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.constructs.retention import retention
from cdk.nag import acknowledge
from lambdas import wiring

ACCESS_LOG_FORMAT = (
    '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","routeKey":"$context.routeKey",'
    '"eventType":"$context.eventType","connectionId":"$context.connectionId","status":"$context.status",'
    '"integrationLatency":"$context.integrationLatency","error":"$context.error.message",'
    '"authorizerError":"$context.authorizer.error","requestTime":"$context.requestTime"}'
)


class ChatWebSocketApi(Construct):
    """`api`, `stage`, `routes[key]`; `connections_url` is what handlers give boto3 as endpoint_url."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        api_name: str,
        functions: dict[str, lambda_.IFunction],
        throttle_rate_limit: int,
        throttle_burst_limit: int,
        log_retention_days: int,
    ) -> None:
        super().__init__(scope, id)
        self.api = apigwv2.WebSocketApi(
            self,
            "Api",
            api_name=api_name,
            route_selection_expression=wiring.ROUTE_SELECTION_EXPRESSION,
            description="chatstack WebSocket chat API (protocol v1)",
        )
        self.authorizer = authorizers.WebSocketLambdaAuthorizer(
            "Authorizer", functions[wiring.AUTHORIZER.name], identity_source=[]
        )
        self.routes: dict[str, apigwv2.WebSocketRoute] = {}
        for route in wiring.ROUTES:
            construct_id = "Route" + "".join(ch for ch in route.key.title() if ch.isalnum())
            self.routes[route.key] = self.api.add_route(
                route.key,
                integration=integrations.WebSocketLambdaIntegration(
                    construct_id + "Integration", functions[route.function.name]
                ),
                authorizer=self.authorizer if route.key == "$connect" else None,
            )
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=retention(log_retention_days), removal_policy=RemovalPolicy.DESTROY
        )
        self.stage = apigwv2.WebSocketStage(
            self,
            "Stage",
            web_socket_api=self.api,
            stage_name=wiring.STAGE_NAME,
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(
                rate_limit=throttle_rate_limit, burst_limit=throttle_burst_limit
            ),
        )
        cfn_stage = self.stage.node.default_child
        assert isinstance(cfn_stage, apigwv2.CfnStage)
        cfn_stage.access_log_settings = apigwv2.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_logs.log_group_arn, format=ACCESS_LOG_FORMAT
        )
        cfn_stage.default_route_settings = apigwv2.CfnStage.RouteSettingsProperty(
            throttling_rate_limit=throttle_rate_limit,
            throttling_burst_limit=throttle_burst_limit,
            logging_level="ERROR",
            detailed_metrics_enabled=True,
        )
        # The authorizer's identity sources are dropped (see the module docstring).
        for child in self.api.node.find_all():
            if isinstance(child, apigwv2.CfnAuthorizer):
                child.add_property_deletion_override("IdentitySource")
        acknowledge(
            self.api,
            [
                {
                    "id": "AwsSolutions-APIG4",
                    "reason": "WebSocket APIs authorize once, on $connect; every later "
                    "route runs on that authenticated connection "
                    "(API Gateway allows authorizers only on $connect).",
                }
            ],
        )

    @property
    def connections_url(self) -> str:
        stack = Stack.of(self)
        return f"https://{self.api.api_id}.execute-api.{stack.region}.{stack.url_suffix}/{wiring.STAGE_NAME}"

    def connections_arn(self) -> str:
        """`@connections` of this API's stage only: post, get and delete any of its connections."""
        return Stack.of(self).format_arn(
            service="execute-api",
            resource=self.api.api_id,
            resource_name=f"{wiring.STAGE_NAME}/*/@connections/*",
        )

    def grant_manage_connections(self, grantee: iam.IGrantable) -> None:
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(actions=["execute-api:ManageConnections"], resources=[self.connections_arn()])
        )
