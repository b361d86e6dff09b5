"""Who wrote a document (migration 0004): the first writer and the last one, per tenant."""

from __future__ import annotations

from typing import Any

import psycopg

Conn = psycopg.Connection[dict[str, Any]]


def record_writer(conn: Conn, *, tenant_id: str, document_id: str, user_id: str) -> None:
    conn.execute(
        "UPDATE documents SET created_by = COALESCE(created_by, %s), updated_by = %s"
        " WHERE tenant_id = %s AND id = %s",
        (user_id, user_id, tenant_id, document_id),
    )


def writers(conn: Conn, *, tenant_id: str, document_id: str) -> tuple[str, str] | None:
    row = conn.execute(
        "SELECT created_by, updated_by FROM documents WHERE tenant_id = %s AND id = %s",
        (tenant_id, document_id),
    ).fetchone()
    return None if row is None else (row["created_by"], row["updated_by"])
