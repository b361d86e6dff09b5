"""`GET /healthz`: deep health (database, Redis, model endpoint). 200 when all answer, else 503."""

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
