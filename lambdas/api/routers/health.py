"""`GET /healthz`: deep health (database, Redis, model endpoint). 200 when all answer, else 503.

`GET /readyz`: standby readiness, what Route 53 checks on a secondary region. Before promotion a
secondary has no database writer (the proxy's read/write endpoint fails), so it proves what it can
do: a read through the proxy's read-only endpoint and a cache PING.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from lambdas.adapters.model_health import model_ready
from lambdas.api.deps import DepsDep

router = APIRouter(tags=["health"])


def _check(fn: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        ok = bool(fn())
        error = None
    except Exception as exc:  # a health check reports failures, it does not raise them
        ok, error = False, f"{type(exc).__name__}: {str(exc)[:200]}"
    result: dict[str, Any] = {"ok": ok, "ms": round((time.perf_counter() - started) * 1000, 1)}
    if error:
        result["error"] = error
    return result


@router.get("/healthz")
def healthz(d: DepsDep) -> JSONResponse:
    checks = {
        "database": _check(d.db.ping),
        "redis": _check(d.cache.ping),
        "model": _check(lambda: model_ready(d.settings)),
    }
    healthy = all(c["ok"] for c in checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "degraded", "checks": checks}, status_code=200 if healthy else 503
    )


def _reader_ping(d: Any) -> bool:
    settings = d.settings
    if not settings.database_reader_host:
        return bool(d.db.ping())
    import psycopg

    from lambdas.runtime import database_password, database_url

    reader = settings.model_copy(update={"database_host": settings.database_reader_host})
    password = database_password(reader)  # an IAM token is signed for the host it connects to
    extra: dict[str, Any] = {"password": password()} if password is not None else {}
    with psycopg.connect(database_url(reader), connect_timeout=3, autocommit=True, **extra) as conn:
        return conn.execute("SELECT 1").fetchone() is not None


@router.get("/readyz")
def readyz(d: DepsDep) -> JSONResponse:
    checks = {"database_reader": _check(lambda: _reader_ping(d)), "redis": _check(d.cache.ping)}
    ready = all(c["ok"] for c in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "degraded", "checks": checks}, status_code=200 if ready else 503
    )
