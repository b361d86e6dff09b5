"""API keys for services: `csk_<lookup>_<secret>`.

The `csk_` prefix makes a leaked key recognisable to secret scanners; the 12-character lookup id finds
the row; the secret (256 random bits) is shown once, at creation, and stored only as the SHA-256 of
the whole key, compared in constant time. A key carries its tenant and scopes, may expire, can be
revoked, and records (to the minute) when it was last used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lambdas import wiring
from lambdas.adapters import identity_repo
from lambdas.adapters.auth import SCOPES, Identity
from lambdas.adapters.identity_repo import ApiKeyRow
from lambdas.errors import BadRequest, Forbidden, NotFound, Unauthorized
from lambdas.runtime import Deps
from lambdas.validation import TENANT_ID_RULE, valid_tenant_id

KEY_PREFIX = "csk_"
LOOKUP_CHARS = 12
SECRET_BYTES = 32
KNOWN_SCOPES = frozenset(SCOPES)
MAX_KEYS_LISTED = 1000
_KEY_SHAPE = re.compile(r"^csk_([a-z2-7]{12})_([A-Za-z0-9_-]{43})$")
# Compared against when the lookup id is unknown, so that both paths do the same work.
_DUMMY_HASH = hashlib.sha256(b"chatstack: no such key").hexdigest()


@dataclass(frozen=True, slots=True)
class CreatedKey:
    row: ApiKeyRow
    key: str  # the only time the whole key exists outside the caller's hands


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def new_key() -> tuple[str, str]:
    """(prefix, whole key)."""
    lookup = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()[:LOOKUP_CHARS]
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")
    prefix = KEY_PREFIX + lookup
    return prefix, f"{prefix}_{secret}"


def key_user_id(prefix: str) -> str:
    """The user a key acts as: its conversations and usage rows are filed under this id."""
    return f"key:{prefix}"


class ApiKeyService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    def authenticate(self, presented: str) -> Identity:
        match = _KEY_SHAPE.match(presented.strip()) if len(presented) <= 256 else None
        if match is None:
            raise Unauthorized("The API key is malformed.")
        prefix = KEY_PREFIX + match.group(1)
        with self.d.db.transaction() as conn:
            row = identity_repo.key_by_prefix(conn, prefix)
            expected = row.hash if row is not None else _DUMMY_HASH
            if not hmac.compare_digest(expected, hash_key(presented.strip())) or row is None:
                raise Unauthorized("The API key is not valid.")
            if row.revoked_at is not None:
                raise Unauthorized("The API key was revoked.")
            if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
                raise Unauthorized("The API key has expired.")
            identity_repo.touch_key(conn, row.id)
        return Identity(
            tenant_id=row.tenant_id,
            user_id=key_user_id(row.prefix),
            scopes=frozenset(row.scopes),
            method="api_key",
            key_id=row.id,
            expires_at=int(row.expires_at.timestamp()) if row.expires_at is not None else 0,
        )

    def create(
        self, creator: Identity, *, name: str, scopes: list[str], expires_in_days: int | None
    ) -> CreatedKey:
        """A new key in the creator's tenant, holding at most the creator's own scopes."""
        if not valid_tenant_id(creator.tenant_id):  # the CLI's operator: the JWT path refuses such ids
            raise BadRequest(f"{TENANT_ID_RULE[0].upper()}{TENANT_ID_RULE[1:]}.")
        name = name.strip()
        if not name or len(name) > 100 or not name.isprintable():
            raise BadRequest("The key name must be 1 to 100 printable characters.")
        wanted = sorted(set(scopes))
        unknown = [s for s in wanted if s not in KNOWN_SCOPES]
        if not wanted or unknown:
            raise BadRequest(f"Scopes must be some of {sorted(KNOWN_SCOPES)}; got {unknown or 'none'}.")
        beyond = [s for s in wanted if not creator.has_scope(s)]
        if beyond:
            raise Forbidden(f"A key cannot hold scopes its creator lacks: {beyond}.")
        if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
            raise BadRequest("expiresInDays must be between 1 and 3650.")
        expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
        prefix, key = new_key()
        with self.d.db.transaction() as conn:
            row = identity_repo.insert_key(
                conn,
                prefix=prefix,
                key_hash=hash_key(key),
                tenant_id=creator.tenant_id,
                name=name,
                scopes=wanted,
                created_by=creator.user_id,
                expires_at=expires,
            )
        return CreatedKey(row=row, key=key)

    def list(self, tenant_id: str) -> list[ApiKeyRow]:
        with self.d.db.transaction() as conn:
            return identity_repo.list_keys(conn, tenant_id=tenant_id, limit=MAX_KEYS_LISTED)

    def revoke(self, tenant_id: str, key_id: str, *, close_connections: bool = True) -> ApiKeyRow:
        """Revoke the key. `close_connections=False` (an operator's command with the database alone)
        leaves WebSocket connections opened with it working until they close (2 h at most)."""
        with self.d.db.transaction() as conn:
            row = identity_repo.revoke_key(conn, tenant_id=tenant_id, key_id=key_id)
            if row is None:  # another tenant's key is as absent as a key that never existed
                raise NotFound("No such API key.")
            # WebSocket connections opened with the key were authorized once, at $connect: each of their
            # frames checks this mark, which outlives the longest connection (API Gateway's 2 h). Set
            # before the commit: if it fails, nothing is revoked and the caller retries.
            if close_connections:
                self.d.cache.mark_key_revoked(row.id, ttl_s=wiring.MAX_CONNECTION_S + 60)
        return row
