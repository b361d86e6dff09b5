"""Cognito Pre Token Generation trigger (event version V2_0): puts `tenant` and `scope` into the tokens.

Cognito emits a custom attribute as `custom:tenant`, and in ID tokens only; access tokens carry only
Cognito's own scopes. The service reads the claims named by `CHATSTACK_AUTH_TENANT_CLAIM` and
`CHATSTACK_AUTH_SCOPES_CLAIM` (`tenant`, `scope`), so this trigger writes them into both tokens:

- tenant: the user's `custom:tenant` attribute, checked by the verifier's own rule (lower-case
  ASCII, never folded: lambdas/validation.py); a user without a valid one gets no tokens (the trigger
  raises, so Cognito refuses the sign-in).
- scopes: the user's groups that name a scope (`chat`, `finance`, `admin`, `documents-write`).
  An access token's `scope` cannot be set as a claim; V2 adds to it with `scopesToAdd`, and Cognito
  writes the space-separated result. The ID token gets the same scopes as a `scope` claim.

Event and response shape: https://docs.aws.amazon.com/cognito/latest/developerguide/user-pool-lambda-pre-token-generation.html
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.config import get_settings
from lambdas.observability import logger
from lambdas.validation import valid_tenant_id

# Cognito fails the sign-in when a trigger takes more than 5 seconds: this 128 MB function imports
# nothing that opens a client (no botocore, no database or Redis driver); infra_tests/test_bundling.py
# holds it to that.

TENANT_ATTRIBUTE = "custom:tenant"
# Cognito groups and the scope each grants (docs/identity.md); other groups grant nothing here. The
# writer group is named with a dash, the scope the service checks with a colon.
SCOPE_GROUPS = {"chat": "chat", "finance": "finance", "admin": "admin", "documents-write": "documents:write"}
EVENT_VERSIONS = ("2", "3")  # V2_0 and V3_0 events carry "version": "2" / "3"; their response is the same


class PreTokenError(Exception):
    """Raised to make Cognito refuse the sign-in; its message reaches the client as the error."""


def scopes_for(groups: list[str]) -> list[str]:
    """The scopes the user's groups grant, in the fixed order above (stable tokens, stable tests)."""
    held = set(groups)
    return [scope for group, scope in SCOPE_GROUPS.items() if group in held]


def claims_response(event: dict[str, Any]) -> dict[str, Any]:
    """The `response` of a V2_0 event, from `request.userAttributes` and the groups."""
    if str(event.get("version", "")) not in EVENT_VERSIONS:
        # A V1_0 response would silently leave the access token unchanged: refuse loudly instead.
        raise PreTokenError("The pre-token trigger must be configured with event version V2_0.")
    request = event.get("request") or {}
    attributes = request.get("userAttributes") or {}
    tenant = attributes.get(TENANT_ATTRIBUTE)
    if not isinstance(tenant, str) or not valid_tenant_id(tenant):
        raise PreTokenError("This user has no valid tenant; an administrator must set custom:tenant.")
    raw_groups = (request.get("groupConfiguration") or {}).get("groupsToOverride") or []
    groups = [g for g in raw_groups if isinstance(g, str)]
    scopes = scopes_for(groups)
    s = get_settings()
    access_claims = {s.auth_tenant_claim: tenant}
    if s.auth_scopes_claim != "scope":  # a claim of another name can be written like any other
        access_claims[s.auth_scopes_claim] = " ".join(scopes)
    return {
        "claimsAndScopeOverrideDetails": {
            "idTokenGeneration": {
                "claimsToAddOrOverride": {s.auth_tenant_claim: tenant, s.auth_scopes_claim: " ".join(scopes)},
            },
            "accessTokenGeneration": {
                "claimsToAddOrOverride": access_claims,
                "scopesToAdd": scopes,
            },
        }
    }


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        response = claims_response(event)
    except PreTokenError as exc:
        logger.info("sign-in refused", extra={"reason": str(exc), "user": event.get("userName")})
        raise
    return {**event, "response": response}
