"""The development identity: a local signing key, its JWKS, and tokens signed with it.

The authorizer verifies these tokens exactly as it verifies Cognito or any OIDC issuer's: it fetches
the JWKS over HTTP (`/.well-known/jwks.json` of the running service) and checks issuer, audience,
expiry and signature. Only the key's origin differs.
"""

from __future__ import annotations

import json
import time
import uuid
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


class DevIdentity:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "signing-key.pem"
        if not path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pem)
            tmp.chmod(0o600)
            tmp.replace(path)
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise SystemExit(
                f"The signing key in {path.name} is not an EC P-256 key; delete it to make a new one."
            )
        self.key = loaded
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
