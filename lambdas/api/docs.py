"""`/docs`: Swagger UI served from the `swagger-ui-bundle` package (works offline, loads nothing from
a CDN, no inline script so a strict CSP holds), and the OpenAPI document's security schemes: a
bearer token (a JWT or an API key, as the OpenAI SDKs send it) and the `x-api-key` header.

Without the package (the Lambda bundle leaves it out to stay small) /docs is simply not served; the
OpenAPI document at /openapi.json is.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT or API key",
               "description": "A JWT from the identity provider (or `chatstack token`), or an API key."},
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "An API key."},
}
PUBLIC = ("/healthz", "/readyz")

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""
INIT = """window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  persistAuthorization: false, presets: [SwaggerUIBundle.presets.apis]});
"""


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        schema["security"] = [{"bearer": []}, {"apiKey": []}]
        for path, operations in schema.get("paths", {}).items():
            if path in PUBLIC:
                for operation in operations.values():
                    operation["security"] = []
        app.openapi_schema = schema
    return app.openapi_schema


def add_docs(app: FastAPI) -> None:
    """Declare the security schemes and serve Swagger UI at /docs from local assets."""
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return
    page = PAGE.format(title=f"{app.title} - docs")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/docs/init.js", include_in_schema=False)
    def init() -> Response:
        return Response(INIT, media_type="text/javascript")

    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
