"""The Cognito Pre Token Generation trigger on Cognito's documented V2_0 event (fixture copied from
https://docs.aws.amazon.com/cognito/latest/developerguide/user-pool-lambda-pre-token-generation.html):
it writes the claim names lambdas/config.py reads, and refuses a user without a usable tenant."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from chatstack.local.lambda_context import invoke, load_handler
from lambdas import wiring
from lambdas.handlers.pre_token import PreTokenError, claims_response

EVENT: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "fixtures/events/cognito_pre_token_generation_v2.json").read_text()
)


def event(**attributes: str | None) -> dict[str, Any]:
    e = copy.deepcopy(EVENT)
    for name, value in attributes.items():
        key = name.replace("custom_", "custom:")
        if value is None:
            e["request"]["userAttributes"].pop(key, None)
        else:
            e["request"]["userAttributes"][key] = value
    return e


def test_the_tokens_get_tenant_and_the_scopes_of_the_users_scope_groups() -> None:
    # GIVEN alice of tenant acme in groups chat, finance and an unrelated group
    # WHEN Cognito invokes the trigger (through the wiring's handler path, as Lambda does)
    result = invoke(load_handler(wiring.PRE_TOKEN), event())
    details = result["response"]["claimsAndScopeOverrideDetails"]
    # THEN the ID token gets both claims, the access token the tenant claim and the scopes to add
    id_claims = details["idTokenGeneration"]["claimsToAddOrOverride"]
    assert id_claims == {"tenant": "acme", "scope": "chat finance"}
    assert details["accessTokenGeneration"]["claimsToAddOrOverride"] == {"tenant": "acme"}
    assert details["accessTokenGeneration"]["scopesToAdd"] == ["chat", "finance"]
    assert result["userName"] == "alice"  # the rest of the event goes back unchanged


def test_every_scope_group_grants_its_scope_and_no_group_grants_none() -> None:
    e = event()
    e["request"]["groupConfiguration"]["groupsToOverride"] = ["documents-write", "admin", "chat", "finance"]
    access = claims_response(e)["claimsAndScopeOverrideDetails"]["accessTokenGeneration"]
    # the writer group grants the scope the service checks (documents:write), not the group's name
    assert access["scopesToAdd"] == ["chat", "finance", "admin", "documents:write"]
    e["request"]["groupConfiguration"]["groupsToOverride"] = []
    details = claims_response(e)["claimsAndScopeOverrideDetails"]
    assert details["accessTokenGeneration"]["scopesToAdd"] == []
    assert details["idTokenGeneration"]["claimsToAddOrOverride"]["scope"] == ""


# The verifier's rule, never folded: " acme", "ACME" and full-width "acme" are refused, not mapped.
@pytest.mark.parametrize(
    "tenant", [None, "", "   ", "x" * 129, "acme\nevil", " acme", "ACME", "\uff41\uff43\uff4d\uff45"]
)
def test_a_user_without_a_valid_tenant_gets_no_tokens(tenant: str | None) -> None:
    # Raising is how a trigger makes Cognito refuse the sign-in.
    with pytest.raises(PreTokenError, match="tenant"):
        invoke(load_handler(wiring.PRE_TOKEN), event(custom_tenant=tenant))


def test_a_trigger_configured_for_v1_events_refuses_rather_than_leaving_access_tokens_bare() -> None:
    e = event()
    e["version"] = "1"
    with pytest.raises(PreTokenError, match="V2_0"):
        claims_response(e)


def test_other_claim_names_follow_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from lambdas.config import get_settings

    monkeypatch.setenv("CHATSTACK_AUTH_TENANT_CLAIM", "org")
    monkeypatch.setenv("CHATSTACK_AUTH_SCOPES_CLAIM", "roles")
    get_settings.cache_clear()
    try:
        details = claims_response(event())["claimsAndScopeOverrideDetails"]
    finally:
        get_settings.cache_clear()
    access_claims = details["accessTokenGeneration"]["claimsToAddOrOverride"]
    assert access_claims == {"org": "acme", "roles": "chat finance"}
