"""The REST API: an HTTP API with a Lambda REQUEST authorizer in front of the FastAPI Lambda (Mangum).

`/v1/{proxy+}` accepts what the app accepts: `Authorization: Bearer <JWT or API key>` or `x-api-key`.
A JWT authorizer cannot: API Gateway answers 401 before any code runs when its identity source
(`$request.header.Authorization`) is missing, so a caller with only `x-api-key` never arrives
(https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-jwt-authorizer.html). The
Lambda authorizer is declared with no identity source and no caching: with identity sources API
Gateway refuses a request lacking any of them, and a cached "allow" would outlive a revoked key
(https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-lambda-authorizer.html).
`GET /healthz` and `GET /readyz` are open because Route 53 health checks call them (they report
whether this region can serve, and nothing else).
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.constructs.retention import retention
from cdk.nag import acknowledge

HEALTH_PATH = "/healthz"
# The standby readiness route: reader endpoint + cache PING (lambdas/api/routers/health.py).
READY_PATH = "/readyz"
ACCESS_LOG_FORMAT = (
    '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","routeKey":"$context.routeKey",'
    '"status":"$context.status","latency":"$context.responseLatency",'
    '"integrationError":"$context.integrationErrorMessage","authorizerError":"$context.authorizer.error"}'
)


class RestHttpApi(Construct):
    """`api` with the Lambda-authorized proxy route and the open health routes to one function."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        api_name: str,
        function: lambda_.IFunction,
        authorizer: lambda_.IFunction,
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
        self.authorizer = authorizers.HttpLambdaAuthorizer(
            "Credentials",
            authorizer,
            response_types=[authorizers.HttpLambdaResponseType.SIMPLE],
            identity_source=[],
            results_cache_ttl=Duration.seconds(0),
        )
        self.api.add_routes(
            path="/v1/{proxy+}",
            methods=[apigwv2.HttpMethod.ANY],
            integration=integration,
            authorizer=self.authorizer,
        )
        # CloudFormation gets no IdentitySource at all (CDK would write an empty list).
        for child in self.api.node.find_all():
            if isinstance(child, apigwv2.CfnAuthorizer):
                child.add_property_deletion_override("IdentitySource")
        health_routes = [
            route
            for path in (HEALTH_PATH, READY_PATH)
            for route in self.api.add_routes(
                path=path, methods=[apigwv2.HttpMethod.GET], integration=integration
            )
        ]
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
