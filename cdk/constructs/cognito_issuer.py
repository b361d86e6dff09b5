"""A Cognito user pool as the deployment's OIDC issuer, when the config names no existing issuer.

The service reads a `tenant` claim and a `scope` claim (lambdas/config.py: auth_tenant_claim,
auth_scopes_claim). Cognito emits a custom attribute as `custom:tenant`, in ID tokens only, and
access tokens carry only Cognito's own scopes, so a Pre Token Generation trigger with event version
V2_0 (the version that can change access tokens) writes both claims from the user's `custom:tenant`
attribute and groups (lambdas/handlers/pre_token.py). V2_0 needs the Essentials or Plus feature plan
(https://docs.aws.amazon.com/cognito/latest/developerguide/user-pool-lambda-pre-token-generation.html).

How a user gets a tenant and scopes: an administrator sets `custom:tenant`
(AdminUpdateUserAttributes; the app client cannot write it, so users cannot move themselves to
another tenant) and adds the user to the groups `chat`, `finance`, `admin`, `documents-write`.

The pool lives in the primary region only: Cognito user pools are regional and not replicated, and a
second pool would hold different users and keys. Tokens keep verifying in every region (the JWKS is
cached by the verifier), but new sign-ins need the primary region (docs/deploy.md).
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from cdk.nag import acknowledge
from lambdas.config import Settings

TENANT_ATTRIBUTE = "tenant"  # emitted by Cognito as `custom:tenant`
# The claim names the service reads, from the settings' own defaults so the two cannot drift.
TENANT_CLAIM = str(Settings.model_fields["auth_tenant_claim"].default)
SCOPES_CLAIM = str(Settings.model_fields["auth_scopes_claim"].default)
# Groups whose names are scopes (the pre-token trigger grants a scope per group held).
SCOPE_GROUPS = ("chat", "finance", "admin", "documents-write")


class CognitoIssuer(Construct):
    """`issuer_url`, `jwks_url` and `audience` (the app client id) for JWT validation."""

    def __init__(
        self, scope: Construct, id: str, *, pool_name: str, pre_token: lambda_.IFunction
    ) -> None:
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
            custom_attributes={TENANT_ATTRIBUTE: cognito.StringAttribute(mutable=True)},
            feature_plan=cognito.FeaturePlan.ESSENTIALS,
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
            # Users may read their tenant but never write it: only an administrator moves a user.
            read_attributes=cognito.ClientAttributes()
            .with_standard_attributes(email=True, email_verified=True)
            .with_custom_attributes(TENANT_ATTRIBUTE),
            write_attributes=cognito.ClientAttributes().with_standard_attributes(email=True),
        )
        self.pool.add_trigger(
            cognito.UserPoolOperation.PRE_TOKEN_GENERATION_CONFIG, pre_token, cognito.LambdaVersion.V2_0
        )
        self.groups = {
            name: cognito.CfnUserPoolGroup(
                self,
                "Group" + "".join(part.title() for part in name.split("-")),
                user_pool_id=self.pool.user_pool_id,
                group_name=name,
                description=f"Grants the '{name}' scope (written into tokens by the pre-token trigger)",
            )
            for name in SCOPE_GROUPS
        }
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
