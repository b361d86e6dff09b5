"""Primary-region identity stack: the Cognito user pool that issues the APIs' JWTs (when the config
names no existing issuer) and its pre-token trigger, which must live in the pool's region."""

from __future__ import annotations

from collections.abc import Callable

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from cdk.config import DeploymentConfig
from cdk.constructs.chat_functions import ChatFunctions
from cdk.constructs.cognito_issuer import SCOPES_CLAIM, TENANT_CLAIM, CognitoIssuer
from cdk.constructs.regional_value import parameter_name, publish
from cdk.stacks.base import ChatstackStack
from lambdas import wiring

# Parameter keys the other regions' API stacks read when they deploy (weak references).
ISSUER_KEYS = ("issuer-url", "issuer-jwks-url", "issuer-audience")


class IdentityStack(ChatstackStack):
    def __init__(
        self, scope: Construct, *, config: DeploymentConfig, code: Callable[[wiring.Function], lambda_.Code]
    ) -> None:
        super().__init__(scope, "identity", config=config, region=config.primary_region)
        # Outside any VPC: the trigger reads only its event and its two settings.
        self.functions = ChatFunctions(
            self,
            "Functions",
            code=code,
            specs=(wiring.PRE_TOKEN,),
            name_prefix=config.name,
            environment={
                "CHATSTACK_ENVIRONMENT": "cloud",
                "CHATSTACK_REGION": config.primary_region,
                "CHATSTACK_SERVICE_NAME": config.name,
                "CHATSTACK_AUTH_TENANT_CLAIM": TENANT_CLAIM,
                "CHATSTACK_AUTH_SCOPES_CLAIM": SCOPES_CLAIM,
                "POWERTOOLS_SERVICE_NAME": config.name,
            },
            log_retention_days=config.api.log_retention_days,
        )
        self.issuer = CognitoIssuer(
            self,
            "Issuer",
            pool_name=config.physical_name("users"),
            pre_token=self.functions[wiring.PRE_TOKEN.name],
        )
        for key, value in zip(
            ISSUER_KEYS,
            (self.issuer.issuer_url, self.issuer.jwks_url, self.issuer.audience),
            strict=True,
        ):
            publish(
                self,
                "Shared" + key.title().replace("-", ""),
                name=parameter_name(config.name, config.primary_region, key),
                value=value,
                description=f"the chat APIs' {key.replace('-', ' ')} (read by every region)",
            )
        # The chat page beside the pool whose hosted UI signs its users in. It must name the APIs
        # before they exist, so it needs their stable custom domains.
        if config.domain_name is not None:
            from cdk.constructs.web_hosting import WebHosting

            self.web = WebHosting(
                self,
                "Web",
                api_base=f"https://{config.rest_domain}",
                websocket_url=f"wss://{config.websocket_domain}",
                user_pool=self.issuer.pool,
                client=self.issuer.client,
                issuer_url=self.issuer.issuer_url,
                hosted_ui_prefix=f"{config.name}-{config.account}",
            )
