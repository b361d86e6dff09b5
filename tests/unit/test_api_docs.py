"""/docs works offline: Swagger UI comes from the installed swagger-ui-bundle package, the page loads
nothing from another origin and runs no inline script (so a `script-src 'self'` CSP holds), and the
OpenAPI document declares how to authenticate (OpenAPI 3 `securitySchemes`: http bearer, apiKey in
the `x-api-key` header) with the health checks left public."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from lambdas.api.app import create_app


def test_docs_page_and_its_assets_are_served_locally() -> None:
    client = TestClient(create_app())
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/docs/") for s in sources), sources
    assert not re.search(r"<script>(?!</script>)", page.text)  # every script has a src
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200 and asset.content, source


def test_openapi_declares_bearer_and_api_key_schemes() -> None:
    schema = TestClient(create_app()).get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header", "name": "x-api-key"}
    assert schema["security"] == [{"bearer": []}, {"apiKey": []}]
    assert schema["paths"]["/healthz"]["get"]["security"] == []
    assert "/v1/chat/completions" in schema["paths"] and "/v1/models" in schema["paths"]
