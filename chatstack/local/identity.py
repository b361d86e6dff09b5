"""The development identity: a local signing key, its JWKS, and tokens signed with it.

The authorizer verifies these tokens exactly as it verifies Cognito or any OIDC issuer's: it fetches
the JWKS over HTTP (`/.well-known/jwks.json` of the running service) and checks issuer, audience,
expiry and signature. Only the key's origin differs.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ISSUER = "chatstack-local"
AUDIENCE = "chatstack"
ALGORITHM = "ES256"
DEFAULT_SCOPES = ("chat",)


def signing_key(path: Path, generate: Callable[[], Any], kind: Any, what: str) -> Any:
    """The private key kept at `path` (PKCS8 PEM, mode 0600), made with `generate` on first use; it
    must be an instance of `kind` (else one sentence says to delete it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        pem = generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pem)
        tmp.chmod(0o600)
        tmp.replace(path)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, kind):
        raise SystemExit(f"The signing key in {path.name} is not {what}; delete it to make a new one.")
    return loaded


class DevIdentity:
    def __init__(self, directory: Path) -> None:
        self.key: ec.EllipticCurvePrivateKey = signing_key(
            directory / "signing-key.pem",
            lambda: ec.generate_private_key(ec.SECP256R1()),
            ec.EllipticCurvePrivateKey,
            "an EC P-256 key",
        )
        public = json.loads(ECAlgorithm.to_jwk(self.key.public_key()))
        self.kid = jwt.utils.base64url_encode(
            json.dumps({k: public[k] for k in ("crv", "kty", "x", "y")}, sort_keys=True).encode()
        ).decode()[:16]
        self.public_jwk = {**public, "kid": self.kid, "use": "sig", "alg": ALGORITHM}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}

    def mint(
        self,
        *,
        user: str,
        tenant: str,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        ttl_s: int = 3600,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": audience,
            "sub": user,
            "tenant": tenant,
            "scope": " ".join(scopes),
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self.key, algorithm=ALGORITHM, headers={"kid": self.kid})
