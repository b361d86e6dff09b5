"""A Cognito user pool as the deployment's OIDC issuer, when the config names no existing issuer.

The pool lives in the primary region (Cognito is regional); both regions' authorizers trust it.
Issuer and JWKS URLs are published as SSM parameters so that other regions' stacks can reference
finished strings (a cross-region reference carries a resource attribute, not an expression).
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from cdk.nag import acknowledge


class CognitoIssuer(Construct):
    """`issuer_url`, `jwks_url` and `audience` (the app client id) for JWT validation."""

    def __init__(self, scope: Construct, id: str, *, pool_name: str) -> None:
        super().__init__(scope, id)
        self.pool = cognito.UserPool(
            self,
            "Pool",
            user_pool_name=pool_name,
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
            ),
            mfa=cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            custom_attributes={"tenant": cognito.StringAttribute(mutable=True)},
            deletion_protection=True,
            # Users are data: kept at teardown (an idle user pool costs nothing).
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.client = self.pool.add_client(
            "Client",
            auth_flows=cognito.AuthFlow(user_srp=True),
            generate_secret=False,
            access_token_validity=Duration.hours(1),
            id_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.days(30),
            prevent_user_existence_errors=True,
        )
        stack = Stack.of(self)
        issuer = f"https://cognito-idp.{stack.region}.{stack.url_suffix}/{self.pool.user_pool_id}"
        self.issuer_parameter = ssm.StringParameter(
            self, "Issuer", string_value=issuer, description="OIDC issuer of the chat APIs"
        )
        self.jwks_parameter = ssm.StringParameter(
            self,
            "Jwks",
            string_value=issuer + "/.well-known/jwks.json",
            description="JWKS URL of the chat APIs' issuer",
        )
        acknowledge(
            self.pool,
            [
                {
                    "id": "AwsSolutions-COG2",
                    "reason": "MFA is optional so that service accounts can sign in; "
                    "operators enforce it per group or federate a corporate IdP instead.",
                },
                {
                    "id": "AwsSolutions-COG8",
                    "reason": "The Plus feature plan is a paid Cognito tier; choose it "
                    "per deployment when its cost is approved, or federate a corporate identity provider.",
                },
                {
                    "id": "AwsSolutions-COG3",
                    "reason": "Threat protection (advanced security) is a paid Cognito "
                    "feature tier; turn it on per deployment when its cost is approved.",
                },
            ],
        )

    @property
    def issuer_url(self) -> str:
        return self.issuer_parameter.string_value

    @property
    def jwks_url(self) -> str:
        return self.jwks_parameter.string_value

    @property
    def audience(self) -> str:
        return self.client.user_pool_client_id
