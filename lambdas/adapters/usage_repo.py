"""SQL over the usage ledger (`usage_records`, one row per answer): finance reports and the sums the
quotas and the budget are checked against. Every query is scoped to one tenant."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg

Conn = psycopg.Connection[dict[str, Any]]
GroupBy = Literal["day", "tenant", "user", "model"]

# Whitelisted grouping expressions: the only SQL text ever built from a request parameter.
_GROUP_EXPR: dict[str, str] = {
    "day": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "tenant": "tenant_id",
    "user": "user_id",
    "model": "model_profile",
}


def report(conn: Conn, *, tenant_id: str, group_by: GroupBy, start: datetime, end: datetime,
           limit: int) -> list[dict[str, Any]]:
    """Totals per group over [start, end), ordered by group key."""
    expr = _GROUP_EXPR[group_by]
    return conn.execute(
        f"SELECT {expr} AS key, count(*) AS requests, coalesce(sum(input_tokens), 0) AS input_tokens,"
        " coalesce(sum(output_tokens), 0) AS output_tokens, coalesce(sum(cost_usd), 0) AS cost_usd"
        " FROM usage_records WHERE tenant_id = %s AND created_at >= %s AND created_at < %s"
        f" GROUP BY {expr} ORDER BY 1 LIMIT %s",
        (tenant_id, start, end, limit),
    ).fetchall()


def tokens_since(conn: Conn, *, tenant_id: str, user_id: str | None, start: datetime) -> int:
    """Input plus output tokens of the tenant (or one of its users) since `start`."""
    if user_id is None:
        row = conn.execute(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0) AS n FROM usage_records"
            " WHERE tenant_id = %s AND created_at >= %s", (tenant_id, start),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0) AS n FROM usage_records"
            " WHERE tenant_id = %s AND user_id = %s AND created_at >= %s", (tenant_id, user_id, start),
        ).fetchone()
    return int(row["n"]) if row else 0


def spend_since(conn: Conn, *, tenant_id: str, start: datetime) -> Decimal:
    row = conn.execute(
        "SELECT coalesce(sum(cost_usd), 0) AS usd FROM usage_records"
        " WHERE tenant_id = %s AND created_at >= %s",
        (tenant_id, start),
    ).fetchone()
    return Decimal(row["usd"]) if row else Decimal(0)
