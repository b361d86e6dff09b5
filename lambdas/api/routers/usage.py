"""Usage for finance: token and dollar totals of the caller's tenant over [from, to), grouped by day,
tenant, user or model profile, as JSON or CSV. Finance scope. Dollars are estimates (docs/identity.md)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from lambdas.adapters import usage_repo
from lambdas.api.deps import Caller, DatabaseDep, require_scope
from lambdas.errors import BadRequest

router = APIRouter(prefix="/v1/usage", tags=["usage"])
FinanceDep = Annotated[Caller, Depends(require_scope("finance"))]
MAX_RANGE = timedelta(days=400)
REPORT_DEADLINE_S = 25.0  # a report reads up to 400 days of usage records
CSV_COLUMNS = ("group", "requests", "input_tokens", "output_tokens", "cost_usd")
PARAMETERS = ("group_by", "from", "to", "format", "limit")


class UsageTotals(BaseModel):
    requests: int
    inputTokens: int
    outputTokens: int
    costUsd: float


class UsageRow(UsageTotals):
    key: str


class UsageReport(BaseModel):
    tenant: str
    groupBy: str
    start: datetime
    end: datetime
    items: list[UsageRow]
    totals: UsageTotals
    truncated: bool


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _row(r: dict[str, Any]) -> dict[str, Any]:
    return {"requests": int(r["requests"]), "inputTokens": int(r["input_tokens"]),
            "outputTokens": int(r["output_tokens"]), "costUsd": float(round(Decimal(r["cost_usd"]), 8))}


def _cell(value: str) -> str:
    # Finance opens these in spreadsheets: a user id starting with "=" must not become a formula.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@router.get(
    "",
    response_model=UsageReport,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                     "description": "The report, as JSON or (format=csv) CSV."}},
)
def usage(
    request: Request,
    caller: FinanceDep,
    db: DatabaseDep,
    group_by: Annotated[Literal["day", "tenant", "user", "model"], Query()] = "day",
    start: Annotated[datetime | None,
                     Query(alias="from", description="Inclusive; default: the month's start (UTC).")] = None,
    end: Annotated[datetime | None, Query(alias="to", description="Exclusive; default: now.")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Any:
    # A parameter this route does not take is refused, not ignored: `tenant=B` would otherwise answer the
    # caller's own tenant's report under a request that asked for another's.
    for name in request.query_params:
        if name not in PARAMETERS:
            why = "the report is always of the caller's own tenant" if name == "tenant" else "unknown"
            raise BadRequest(
                f"This route takes no {name!r} parameter ({why}); it takes {', '.join(PARAMETERS)}.",
                param=name,
            )
    now = datetime.now(UTC)
    try:
        begin = _utc(start) if start else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        finish = _utc(end) if end else now
    except (OverflowError, ValueError):
        raise BadRequest("from and to must be valid instants.") from None
    if begin >= finish:
        if start is None:  # name what the caller did not send: its default
            raise BadRequest(
                f"to must be later than from, which defaults to the month's start ({begin:%Y-%m-%d})."
            )
        if end is None:
            raise BadRequest("from must be earlier than to, which defaults to now.")
        raise BadRequest("from must be earlier than to.")
    if finish - begin > MAX_RANGE:
        raise BadRequest("The range may span at most 400 days; ask for several reports.")
    # The rows and the totals from one snapshot (they always agree), within the REST function's 29 s.
    with db.snapshot(deadline_s=REPORT_DEADLINE_S) as conn:
        rows = usage_repo.report(conn, tenant_id=caller.tenant_id, group_by=group_by, start=begin, end=finish,
                                 limit=limit + 1)
        totals = usage_repo.report(conn, tenant_id=caller.tenant_id, group_by="tenant", start=begin,
                                   end=finish, limit=1)
    truncated = len(rows) > limit
    rows = rows[:limit]
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow([_cell(str(r["key"])), r["requests"], r["input_tokens"], r["output_tokens"],
                             f"{Decimal(r['cost_usd']):.8f}"])
        filename = f"usage-{group_by}-{begin:%Y%m%d}-{finish:%Y%m%d}.csv"
        return Response(out.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    empty = {"requests": 0, "inputTokens": 0, "outputTokens": 0, "costUsd": 0.0}
    total = _row(totals[0]) if totals else empty
    return UsageReport(tenant=caller.tenant_id, groupBy=group_by, start=begin, end=finish,
                       items=[UsageRow(key=str(r["key"]), **_row(r)) for r in rows],
                       totals=UsageTotals(**total), truncated=truncated)
