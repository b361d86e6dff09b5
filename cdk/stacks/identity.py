"""Primary-region identity stack: the Cognito user pool that issues the APIs' JWTs (when the config
names no existing issuer)."""

from __future__ import annotations

from constructs import Construct

from cdk.config import DeploymentConfig
from cdk.constructs.cognito_issuer import CognitoIssuer
from cdk.stacks.base import ChatstackStack


class IdentityStack(ChatstackStack):
    def __init__(self, scope: Construct, *, config: DeploymentConfig) -> None:
        super().__init__(scope, "identity", config=config, region=config.primary_region)
        self.issuer = CognitoIssuer(self, "Issuer", pool_name=config.physical_name("users"))
