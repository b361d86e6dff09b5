"""The REST API: one FastAPI app, served by uvicorn locally and by Mangum in Lambda.

Errors are mapped in one place: a ChatError becomes `{"error": {"message", "type", "param", "code"}}`
(OpenAI's shape, lambdas.errors.error_document) with its status; request validation failures become
400 BAD_REQUEST with the first problem named; PostgreSQL or Redis down, a 503 with Retry-After.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lambdas.adapters.auth import Identity
from lambdas.adapters.failures import dependency_down
from lambdas.api.docs import add_docs
from lambdas.api.middleware import RequestGuard
from lambdas.api.routers import api_keys, conversations, documents, health, limits, openai, usage
from lambdas.errors import ChatError, Unavailable, error_document
from lambdas.runtime import Deps, deps

API_TITLE = "chatstack REST API"
# The standard logger: the app also runs inside `chatstack up`, whose own `chatstack.up` lines must not
# pass through Powertools' handler (lambdas.observability takes the `chatstack` logger tree).
log = logging.getLogger(__name__)


def _error(
    status: int, code: str, message: str, retry_after: float | None = None, param: str | None = None
) -> JSONResponse:
    headers = {"Retry-After": str(max(1, int(retry_after)))} if retry_after else None
    return JSONResponse(error_document(code, message, param), status_code=status, headers=headers)


_HTTP_CODES = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 413: "TOO_LARGE", 429: "RATE_LIMITED"}


def _authenticate(d: Deps, authorization: str | None, x_api_key: str | None) -> Identity:
    from lambdas.services.credentials import identity_from_headers

    return identity_from_headers(d, authorization=authorization, x_api_key=x_api_key)


def create_app() -> FastAPI:
    # /docs is served from local Swagger UI assets by add_docs (below), not from a CDN.
    app = FastAPI(title=API_TITLE, version="1.0.0", docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")

    @app.exception_handler(ChatError)
    async def chat_error(_: Request, exc: ChatError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.retry_after, exc.details.get("param"))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return _error(400, "BAD_REQUEST", "The body is not valid JSON.")
        where = ".".join(str(p) for p in first.get("loc", ()))
        loc = first.get("loc", ())
        field = str(loc[1]) if len(loc) > 1 else None  # the request's field, past "body" / "query"
        message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        return _error(400, "BAD_REQUEST", message, param=field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown paths, wrong methods: the same error shape as every other refusal.
        code = _HTTP_CODES.get(exc.status_code, "INTERNAL" if exc.status_code >= 500 else "BAD_REQUEST")
        return _error(exc.status_code, code, str(exc.detail), None)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        if dependency_down(exc):  # PostgreSQL or Redis is down: as on the WebSocket, retry shortly
            log.warning("request failed: a dependency is unavailable: %s", exc)
            down = Unavailable(deps().settings.dependency_retry_after_s)
            return _error(down.status, down.code, down.message, down.retry_after)
        return _error(500, "INTERNAL", "The request failed; please retry.")

    # Outermost of the app's own layers: refuses bad paths, unauthenticated or oversized bodies and
    # deep or control-laden JSON before any route reads the body (lambdas/api/middleware.py).
    app.add_middleware(RequestGuard, authenticate=_authenticate)

    app.include_router(health.router)
    app.include_router(conversations.router)
    for router in (documents.router, usage.router, api_keys.router, limits.router, openai.router):
        app.include_router(router)
    add_docs(app)
    return app
