"""JWT verification against an OIDC issuer's JWKS (Cognito, any OIDC provider, or the local dev issuer).

Only asymmetric algorithms from the configuration are accepted; issuer, audience (or Cognito's
`client_id` + `token_use`), `exp` and `nbf` are checked with a small leeway. Keys are cached for a TTL
and refetched once when a token names an unknown `kid` (PyJWKClient's behaviour).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWKClient

from lambdas.config import Settings
from lambdas.errors import Unauthorized
from lambdas.validation import valid_tenant_id, valid_user_id

MAX_TOKEN_BYTES = 8192
MAX_TENANT_CHARS = 128
SCOPES = ("chat", "finance", "admin", "documents:write")  # every scope an identity may hold, in order


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: the small context the authorizer hands to every route."""

    tenant_id: str
    user_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    method: str = "jwt"  # "jwt" | "api_key"
    key_id: str = ""
    # When the credential expires (epoch seconds; 0: never). A WebSocket connection is authorized once,
    # at $connect, and may outlive its token: every later frame checks this (lambdas/handlers/_ws.py).
    expires_at: int = 0

    def to_context(self) -> dict[str, str]:
        """API Gateway authorizer context: flat string values only."""
        return {
            "tenantId": self.tenant_id,
            "userId": self.user_id,
            "scopes": " ".join(sorted(self.scopes)),
            "method": self.method,
            "keyId": self.key_id,
            "expiresAt": str(self.expires_at),
        }

    @classmethod
    def from_context(cls, context: dict[str, Any] | None) -> Identity:
        context = context or {}
        tenant, user = context.get("tenantId"), context.get("userId")
        if not tenant or not user:
            raise Unauthorized("The connection carries no identity; reconnect with a token.")
        return cls(
            tenant_id=str(tenant),
            user_id=str(user),
            scopes=frozenset(str(context.get("scopes") or "").split()),
            method=str(context.get("method") or "jwt"),
            key_id=str(context.get("keyId") or ""),
            expires_at=_epoch(context.get("expiresAt")),
        )

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class JwtVerifier:
    def __init__(self, settings: Settings, jwks_client: PyJWKClient | None = None) -> None:
        if not settings.auth_issuer:
            raise ValueError("No token issuer: set CHATSTACK_AUTH_ISSUER.")
        self.settings = settings
        jwks_url = settings.auth_jwks_url or settings.auth_issuer.rstrip("/") + "/.well-known/jwks.json"
        self.jwks = jwks_client or PyJWKClient(
            jwks_url, cache_jwk_set=True, lifespan=max(settings.auth_jwks_ttl_s, 1), timeout=5
        )

    def verify(self, token: str) -> Identity:
        s = self.settings
        if not token:
            raise Unauthorized("No token was presented.")
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized("The token is larger than 8 KB.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("The token is malformed.") from None
        if header.get("alg") not in s.algorithms:
            raise Unauthorized(f"Token algorithm {str(header.get('alg'))[:20]!r} is not accepted.")
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientError:
            raise Unauthorized("The token's signing key is unknown to the issuer.") from None
        except jwt.PyJWTError:
            raise Unauthorized("The token is malformed.") from None
        try:
            claims = self._decode(token, key.key, verify_aud=bool(s.auth_audience))
            cognito_access = False
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim != "aud":
                raise Unauthorized(f"The token lacks the {exc.claim!r} claim.") from None
            # Cognito access tokens carry client_id instead of aud: checked below. Every other check
            # (signature, issuer, expiry) already passed, since PyJWT checks the audience last.
            claims = self._decode(token, key.key, verify_aud=False)
            cognito_access = True
        if cognito_access and not (
            claims.get("token_use") == "access" and claims.get("client_id") == s.auth_audience
        ):
            raise Unauthorized("The token is meant for another audience.")
        # With the audience matched it is an ID token: Cognito's say so in `token_use` (its access
        # tokens carry no `aud`); a provider that does not set the claim is not asked for it.
        # https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-tokens-verifying-a-jwt.html
        if not cognito_access and claims.get("token_use", "id") != "id":
            raise Unauthorized("The token is meant for another use.")
        tenant = claims.get(s.auth_tenant_claim)
        user = claims.get(s.auth_user_claim)
        if not isinstance(tenant, str) or not tenant or not isinstance(user, str) or not user:
            raise Unauthorized(
                f"The token lacks the tenant ({s.auth_tenant_claim!r}) or user ({s.auth_user_claim!r}) claim."
            )
        if len(tenant) > MAX_TENANT_CHARS or len(user) > 256:
            raise Unauthorized("The token's tenant or user claim is too long.")
        if not valid_tenant_id(tenant) or not valid_user_id(user):
            # Never folded (case, width, blanks): one tenant must not be reachable under two names.
            raise Unauthorized("The token's tenant or user id is not a valid id (see docs/security.md).")
        self._check_lifetime(claims)
        return Identity(
            tenant_id=tenant,
            user_id=user,
            scopes=_scopes(claims.get(s.auth_scopes_claim)),
            method="jwt",
            expires_at=int(claims["exp"]),
        )

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        """A signed `exp` far in the future is a token that can never be taken back: cap the lifetime."""
        s = self.settings
        exp, iat = claims.get("exp"), claims.get("iat")
        start = iat if isinstance(iat, int | float) and not isinstance(iat, bool) else time.time()
        if not isinstance(exp, int | float) or exp - start > s.auth_max_token_lifetime_s + s.auth_leeway_s:
            raise Unauthorized(
                f"The token lives longer than the {s.auth_max_token_lifetime_s} s this service accepts."
            )

    def _decode(self, token: str, key: Any, *, verify_aud: bool) -> dict[str, Any]:
        s = self.settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=s.algorithms,
                issuer=s.auth_issuer,
                audience=(s.auth_audience or None) if verify_aud else None,
                leeway=s.auth_leeway_s,
                options={"require": ["exp", "iss", "sub"], "verify_aud": verify_aud},
            )
        except jwt.MissingRequiredClaimError:
            raise
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("The token is not valid yet.") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("The token was issued by another issuer.") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("The token is meant for another audience.") from None
        except jwt.PyJWTError:
            raise Unauthorized("The token's signature or claims are invalid.") from None
        return claims


def _epoch(raw: Any) -> int:
    """An authorizer context's `expiresAt` (a string, as API Gateway passes every value): 0 if absent."""
    try:
        return max(0, int(str(raw or "0")))
    except ValueError:
        return 0


def _scopes(raw: Any) -> frozenset[str]:
    """Scopes as a space-separated string (OAuth, Cognito) or a list of strings; anything else is none."""
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list):
        return frozenset(x for x in raw if isinstance(x, str) and x and " " not in x)
    return frozenset()
