"""The REST API: an HTTP API with a JWT authorizer in front of the FastAPI Lambda (Mangum).

`/v1/{proxy+}` requires a JWT from the deployment's issuer; `GET /healthz` is open because
Route 53 health checks call it (it reports whether this region can serve, and nothing else).
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.constructs.retention import retention
from cdk.nag import acknowledge

HEALTH_PATH = "/healthz"
ACCESS_LOG_FORMAT = (
    '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","routeKey":"$context.routeKey",'
    '"status":"$context.status","latency":"$context.responseLatency",'
    '"integrationError":"$context.integrationErrorMessage","authorizerError":"$context.authorizer.error"}'
)


class RestHttpApi(Construct):
    """`api` with the JWT-authorized proxy route and the open health route to one function."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        api_name: str,
        function: lambda_.IFunction,
        issuer: str,
        audience: str,
        throttle_rate_limit: int,
        throttle_burst_limit: int,
        log_retention_days: int,
    ) -> None:
        super().__init__(scope, id)
        self.api = apigwv2.HttpApi(
            self,
            "Api",
            api_name=api_name,
            create_default_stage=False,
            description="chatstack REST API (/v1)",
        )
        integration = integrations.HttpLambdaIntegration("RestIntegration", function)
        self.authorizer = authorizers.HttpJwtAuthorizer(
            "Jwt", issuer, jwt_audience=[audience], identity_source=["$request.header.Authorization"]
        )
        self.api.add_routes(
            path="/v1/{proxy+}",
            methods=[apigwv2.HttpMethod.ANY],
            integration=integration,
            authorizer=self.authorizer,
        )
        health_routes = self.api.add_routes(
            path=HEALTH_PATH,
            methods=[apigwv2.HttpMethod.GET],
            integration=integration,
        )
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=retention(log_retention_days), removal_policy=RemovalPolicy.DESTROY
        )
        self.stage = apigwv2.HttpStage(
            self,
            "Stage",
            http_api=self.api,
            stage_name="$default",
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
        for route in health_routes:
            acknowledge(
                route,
                [
                    {
                        "id": "AwsSolutions-APIG4",
                        "reason": "The health route is open so Route 53 health checkers "
                        "can call it; it returns only whether this region can serve.",
                    }
                ],
            )

    @property
    def regional_host(self) -> str:
        """`{api-id}.execute-api.{region}.amazonaws.com`: what the health check calls."""
        stack = Stack.of(self)
        return f"{self.api.api_id}.execute-api.{stack.region}.{stack.url_suffix}"
