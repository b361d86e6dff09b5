"""Unit tests that kill the mutations the attack found surviving (issue 11): a token without `exp`, the
tenant/user length caps, an authorizer context without `userId`, tenant ids unquoted in rate-limit keys;
and the new rules: one pattern for tenant and user ids, a maximum token lifetime, no control characters
or deep JSON in frames. The verifier fetches a real JWKS over HTTP (RFC 7517 `jwks_uri` contract)."""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from lambdas import protocol
from lambdas.adapters.auth import Identity, JwtVerifier
from lambdas.config import Settings
from lambdas.errors import BadRequest, Unauthorized
from lambdas.services.limits import _tag
from lambdas.validation import json_too_deep, valid_tenant_id, valid_user_id
from tests.helpers.jwks import serve_jwks

ISSUER, AUDIENCE = "https://issuer.example", "chatstack"
KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def verifier() -> Iterator[JwtVerifier]:
    jwk = {**json.loads(ECAlgorithm.to_jwk(KEY.public_key())), "kid": "k1", "use": "sig", "alg": "ES256"}
    with serve_jwks([jwk]) as server:
        yield JwtVerifier(Settings(auth_issuer=ISSUER, auth_jwks_url=server.url, auth_audience=AUDIENCE,
                                   auth_algorithms="ES256", auth_max_token_lifetime_s=3600))


def token(**overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "tenant": "acme", "scope": "chat",
              "iat": now, "exp": now + 300, **overrides}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, KEY, algorithm="ES256",
                      headers={"kid": "k1"})


def refusal(verifier: JwtVerifier, raw: str) -> str:
    with pytest.raises(Unauthorized) as caught:
        verifier.verify(raw)
    return caught.value.message


def test_a_token_without_exp_is_refused(verifier: JwtVerifier) -> None:
    assert "'exp'" in refusal(verifier, token(exp=None))


def test_a_token_signed_to_expire_in_year_9999_is_refused(verifier: JwtVerifier) -> None:
    assert "lives longer" in refusal(verifier, token(exp=253402300799))
    assert "lives longer" in refusal(verifier, token(exp=int(time.time()) + 7200, iat=None))
    assert verifier.verify(token(exp=int(time.time()) + 3500)).user_id == "alice"


def test_tenant_and_user_length_caps_hold_at_the_boundary(verifier: JwtVerifier) -> None:
    assert verifier.verify(token(tenant="a" * 128, sub="u" * 256)).tenant_id == "a" * 128
    assert "too long" in refusal(verifier, token(tenant="a" * 129))
    assert "too long" in refusal(verifier, token(sub="u" * 257))


FULL_WIDTH_ACME = "\uff41\uff43\uff4d\uff45"


@pytest.mark.parametrize("tenant", [" ", " acme", "ACME", FULL_WIDTH_ACME, "ac\u202eme", "ac\x00me", "-acme"])
def test_tenant_variants_are_refused_never_folded_into_another(verifier: JwtVerifier, tenant: str) -> None:
    assert "not a valid id" in refusal(verifier, token(tenant=tenant))


@pytest.mark.parametrize("user", [" alice", "al\x00ice", "al\u200fice", unicodedata.normalize("NFD", "zoë")])
def test_user_ids_with_controls_blanks_or_not_in_nfc_are_refused(verifier: JwtVerifier, user: str) -> None:
    assert "not a valid id" in refusal(verifier, token(sub=user))


def test_the_id_rules_accept_the_ids_people_use() -> None:
    assert all(valid_tenant_id(t) for t in ["acme", "t-1a2b", "acme.eu_west", "0"])
    assert all(valid_user_id(u) for u in ["alice", "Alice", "key:abc123", "auth0|5f1", "zoë", "李雷"])


def test_an_authorizer_context_without_user_id_is_refused() -> None:
    with pytest.raises(Unauthorized):
        Identity.from_context({"tenantId": "acme", "scopes": "chat"})
    with pytest.raises(Unauthorized):
        Identity.from_context({"userId": "alice", "scopes": "chat"})
    assert Identity.from_context({"tenantId": "acme", "userId": "alice"}).user_id == "alice"


def test_tenant_ids_are_quoted_in_rate_limit_keys_so_none_can_forge_another() -> None:
    # Unquoted, tenant "a}:rl:msg:x" would write into tenant "a"'s keys (and its cluster slot).
    assert _tag("a}:rl:msg:x") != "cs:{a}" and "}" not in _tag("a}:rl:msg:x")[4:-1]
    assert _tag("a:b") == "cs:{a%3Ab}" and _tag("acme") == "cs:{acme}"


@pytest.mark.parametrize("text", ["a\x00b", "bell\x07", "c1\x85", "esc\x1b[31m"])
def test_control_characters_in_a_frame_are_bad_request(text: str) -> None:
    body = json.dumps({"action": "sendMessage", "requestId": "8c32529b-9ccb-4ab1-a029-1f98608594ad",
                       "text": text})
    with pytest.raises(BadRequest, match="control characters"):
        protocol.parse_client_frame(body)


def test_tabs_and_line_breaks_are_ordinary_text() -> None:
    body = json.dumps({"action": "sendMessage", "requestId": "8c32529b-9ccb-4ab1-a029-1f98608594ad",
                       "text": "line one\n\tline two\r\n"})
    assert isinstance(protocol.parse_client_frame(body), protocol.SendMessage)


def test_deep_json_is_refused_before_parsing_and_brackets_in_strings_do_not_count() -> None:
    with pytest.raises(BadRequest, match="deeper than 32"):
        protocol.parse_client_frame("[" * 200_000 + "]" * 200_000)  # json.loads would hit RecursionError
    assert protocol.peek_request_id("[" * 200_000 + "]" * 200_000) is None  # the error frame's path too
    assert json_too_deep("[" * 33 + "]" * 33) and not json_too_deep("[" * 32 + "]" * 32)
    assert not json_too_deep(json.dumps({"text": "[[[[" * 100 + '\\"{{{{'}))
