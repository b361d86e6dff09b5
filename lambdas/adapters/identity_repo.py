"""SQL for API keys and per-tenant limit overrides. Every query but the key lookup is scoped to a tenant
(the lookup is how a key finds its tenant)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

Conn = psycopg.Connection[dict[str, Any]]

# last_used_at is advisory: writing it on every request would turn each read into a write.
LAST_USED_RESOLUTION_S = 60


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: str
    prefix: str
    hash: str
    tenant_id: str
    name: str
    scopes: tuple[str, ...]
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: dict[str, Any]) -> ApiKeyRow:
        return cls(
            id=str(row["id"]), prefix=row["prefix"], hash=row["hash"], tenant_id=row["tenant_id"],
            name=row["name"], scopes=tuple(row["scopes"]), created_by=row["created_by"],
            created_at=row["created_at"], expires_at=row["expires_at"], revoked_at=row["revoked_at"],
            last_used_at=row["last_used_at"],
        )


_KEY_COLUMNS = ("id, prefix, hash, tenant_id, name, scopes, created_by, created_at, expires_at, revoked_at,"
                " last_used_at")


def insert_key(conn: Conn, *, prefix: str, key_hash: str, tenant_id: str, name: str, scopes: list[str],
               created_by: str, expires_at: datetime | None) -> ApiKeyRow:
    row = conn.execute(
        f"INSERT INTO api_keys (id, prefix, hash, tenant_id, name, scopes, created_by, expires_at)"
        f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_KEY_COLUMNS}",
        (uuid.uuid4(), prefix, key_hash, tenant_id, name, scopes, created_by, expires_at),
    ).fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return ApiKeyRow.of(row)


def key_by_prefix(conn: Conn, prefix: str) -> ApiKeyRow | None:
    row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE prefix = %s", (prefix,)).fetchone()
    return ApiKeyRow.of(row) if row else None


def touch_key(conn: Conn, key_id: str) -> None:
    conn.execute(
        "UPDATE api_keys SET last_used_at = now() WHERE id = %s"
        " AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => %s))",
        (key_id, LAST_USED_RESOLUTION_S),
    )


def list_keys(conn: Conn, *, tenant_id: str, limit: int) -> list[ApiKeyRow]:
    rows = conn.execute(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id = %s"
        " ORDER BY created_at DESC, id DESC LIMIT %s",
        (tenant_id, limit),
    ).fetchall()
    return [ApiKeyRow.of(r) for r in rows]


def revoke_key(conn: Conn, *, tenant_id: str, key_id: str) -> ApiKeyRow | None:
    """Revoke the tenant's key (idempotent: the first revocation time is kept); None if the tenant has
    no such key."""
    row = conn.execute(
        f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s AND tenant_id = %s"
        f" RETURNING {_KEY_COLUMNS}",
        (key_id, tenant_id),
    ).fetchone()
    return ApiKeyRow.of(row) if row else None


def limit_overrides(conn: Conn, tenant_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT overrides FROM tenant_limits WHERE tenant_id = %s", (tenant_id,)).fetchone()
    return dict(row["overrides"]) if row else {}


def set_limit_overrides(conn: Conn, *, tenant_id: str, overrides: dict[str, Any], updated_by: str) -> None:
    conn.execute(
        "INSERT INTO tenant_limits (tenant_id, overrides, updated_by) VALUES (%s, %s, %s)"
        " ON CONFLICT (tenant_id) DO UPDATE SET overrides = EXCLUDED.overrides,"
        " updated_by = EXCLUDED.updated_by, updated_at = now()",
        (tenant_id, json.dumps(overrides), updated_by),
    )
