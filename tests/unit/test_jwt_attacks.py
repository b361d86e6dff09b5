"""The JWT verifier against the attacks the issue lists, with a real JWKS served over HTTP and fetched
by PyJWKClient (contract: an OIDC issuer's `jwks_uri` answering a JSON Web Key Set, RFC 7517)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWKClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from lambdas.adapters.auth import JwtVerifier
from lambdas.config import Settings
from lambdas.errors import Unauthorized
from tests.helpers.jwks import JwksServer, serve_jwks

ISSUER = "https://issuer.example"
AUDIENCE = "chatstack"
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _jwk(public: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = ECAlgorithm if alg.startswith("ES") else RSAAlgorithm
    return {**json.loads(algorithm.to_jwk(public)), "kid": kid, "use": "sig", "alg": alg}


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    with serve_jwks([_jwk(EC_KEY.public_key(), "ec-1", "ES256"),
                     _jwk(RSA_KEY.public_key(), "rsa-1", "RS256")]) as server:
        yield server


@pytest.fixture
def verifier(jwks: JwksServer) -> JwtVerifier:
    return JwtVerifier(Settings(auth_issuer=ISSUER, auth_jwks_url=jwks.url, auth_audience=AUDIENCE,
                                auth_algorithms="ES256,RS256", auth_leeway_s=30))


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "tenant": "acme", "scope": "chat finance",
            "iat": now, "nbf": now, "exp": now + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], *, key: Any = EC_KEY, alg: str = "ES256", kid: str = "ec-1") -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def refused(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(Unauthorized) as caught:
        verifier.verify(token)
    return caught.value.message


def test_a_valid_es256_token_is_accepted_with_tenant_user_and_scopes(verifier: JwtVerifier) -> None:
    identity = verifier.verify(sign(claims()))
    assert (identity.tenant_id, identity.user_id, identity.method) == ("acme", "alice", "jwt")
    assert identity.scopes == {"chat", "finance"}


def test_a_valid_rs256_token_is_accepted(verifier: JwtVerifier) -> None:
    assert verifier.verify(sign(claims(), key=RSA_KEY, alg="RS256", kid="rsa-1")).user_id == "alice"


def test_alg_none_is_refused(verifier: JwtVerifier) -> None:
    header = b64(json.dumps({"alg": "none", "kid": "ec-1"}).encode())
    token = header + "." + b64(json.dumps(claims()).encode()) + "."
    assert "not accepted" in refused(verifier, token)


def test_hs256_signed_with_the_public_key_is_refused(verifier: JwtVerifier, jwks: JwksServer) -> None:
    public_pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = (b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode()) + "."
                     + b64(json.dumps(claims()).encode()))
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert "not accepted" in refused(verifier, signing_input + "." + b64(mac))
    assert jwks.fetches == 0  # refused before any key was even looked up


def test_an_expired_token_is_refused(verifier: JwtVerifier) -> None:
    now = int(time.time())
    assert "expired" in refused(verifier, sign(claims(iat=now - 600, nbf=now - 600, exp=now - 60)))


def test_expiry_within_the_small_leeway_is_tolerated(verifier: JwtVerifier) -> None:
    now = int(time.time())
    assert verifier.verify(sign(claims(iat=now - 600, nbf=now - 600, exp=now - 5))).user_id == "alice"


def test_a_token_not_yet_valid_is_refused(verifier: JwtVerifier) -> None:
    now = int(time.time())
    assert "not valid yet" in refused(verifier, sign(claims(iat=now, nbf=now + 120, exp=now + 600)))


def test_a_token_of_another_issuer_is_refused(verifier: JwtVerifier) -> None:
    assert "another issuer" in refused(verifier, sign(claims(iss="https://evil.example")))


def test_a_token_for_another_audience_is_refused(verifier: JwtVerifier) -> None:
    assert "another audience" in refused(verifier, sign(claims(aud="someone-else")))


def test_a_tampered_payload_is_refused(verifier: JwtVerifier) -> None:
    header, _, signature = sign(claims()).split(".")
    forged = b64(json.dumps(claims(tenant="victim-corp")).encode())
    assert "signature" in refused(verifier, f"{header}.{forged}.{signature}")


def test_a_token_signed_by_a_stranger_under_a_known_kid_is_refused(verifier: JwtVerifier) -> None:
    assert "signature" in refused(verifier, sign(claims(), key=OTHER_EC_KEY))


def _quick_cooldown_verifier(jwks: JwksServer) -> JwtVerifier:
    """The production client, with its refetch cooldown (30 s by default) cut to keep the test short."""
    settings = Settings(auth_issuer=ISSUER, auth_jwks_url=jwks.url, auth_audience=AUDIENCE,
                        auth_algorithms="ES256,RS256")
    client = PyJWKClient(jwks.url, cache_jwk_set=True, lifespan=600, timeout=5, cooldown_duration=0.3)
    return JwtVerifier(settings, jwks_client=client)


def test_an_unknown_kid_is_refused_after_exactly_one_refetch(jwks: JwksServer) -> None:
    verifier = _quick_cooldown_verifier(jwks)
    verifier.verify(sign(claims()))
    assert jwks.fetches == 1
    time.sleep(0.4)
    assert "unknown" in refused(verifier, sign(claims(), key=OTHER_EC_KEY, kid="who-knows"))
    assert jwks.fetches == 2
    # A flood of made-up kids does not turn into a flood of fetches: the refetch cools down.
    for i in range(5):
        refused(verifier, sign(claims(), key=OTHER_EC_KEY, kid=f"made-up-{i}"))
    assert jwks.fetches == 2


def test_a_rotated_key_is_found_by_the_refetch_on_its_new_kid(jwks: JwksServer) -> None:
    verifier = _quick_cooldown_verifier(jwks)
    verifier.verify(sign(claims()))  # caches the set without the new key
    jwks.keys.append(_jwk(OTHER_EC_KEY.public_key(), "ec-2", "ES256"))
    time.sleep(0.4)
    assert verifier.verify(sign(claims(), key=OTHER_EC_KEY, kid="ec-2")).user_id == "alice"
    assert jwks.fetches == 2


def test_keys_are_cached_between_tokens(verifier: JwtVerifier, jwks: JwksServer) -> None:
    for _ in range(5):
        verifier.verify(sign(claims()))
    assert jwks.fetches == 1


def test_an_oversized_token_is_refused_without_parsing(verifier: JwtVerifier, jwks: JwksServer) -> None:
    token = sign(claims(padding="x" * 10_000))
    assert "larger than 8 KB" in refused(verifier, token)
    assert jwks.fetches == 0


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "....", "eyJhbGciOiJFUzI1NiJ9.e30.sig", "🙂.🙂.🙂"])
def test_garbage_is_refused_cleanly(verifier: JwtVerifier, garbage: str) -> None:
    refused(verifier, garbage)


def test_a_token_without_the_tenant_claim_is_refused(verifier: JwtVerifier) -> None:
    assert "tenant" in refused(verifier, sign(claims(tenant=None)))


def test_a_scope_claim_of_an_odd_type_grants_nothing_and_breaks_nothing(verifier: JwtVerifier) -> None:
    assert verifier.verify(sign(claims(scope=5))).scopes == frozenset()
    assert verifier.verify(sign(claims(scope=["admin", {"x": 1}]))).scopes == {"admin"}


def test_tenant_and_user_claims_are_configurable(jwks: JwksServer) -> None:
    verifier = JwtVerifier(Settings(auth_issuer=ISSUER, auth_jwks_url=jwks.url, auth_audience=AUDIENCE,
                                    auth_tenant_claim="custom:org", auth_user_claim="email"))
    identity = verifier.verify(sign(claims(**{"custom:org": "globex", "email": "bo@globex.example"})))
    assert (identity.tenant_id, identity.user_id) == ("globex", "bo@globex.example")


def test_a_cognito_access_token_is_checked_by_client_id_and_token_use(verifier: JwtVerifier) -> None:
    access = claims(aud=None, client_id=AUDIENCE, token_use="access")
    assert verifier.verify(sign(access)).user_id == "alice"
    stranger = claims(aud=None, client_id="other", token_use="access")
    assert "another audience" in refused(verifier, sign(stranger))
    assert "another audience" in refused(verifier, sign(claims(aud=None, client_id=AUDIENCE, token_use="id")))
    # With the audience matched, only an ID token (or a provider's token without token_use) passes.
    assert verifier.verify(sign(claims(token_use="id"))).tenant_id
    for use in ("access", "bogus", ""):
        assert "another use" in refused(verifier, sign(claims(token_use=use)))
    now = int(time.time())
    expired = claims(aud=None, client_id=AUDIENCE, token_use="access", iat=now - 900, nbf=now - 900,
                     exp=now - 300)
    assert "expired" in refused(verifier, sign(expired))


def test_symmetric_algorithms_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        Settings(auth_algorithms="RS256,HS256")
