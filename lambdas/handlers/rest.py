"""The REST API in Lambda: the FastAPI app behind Mangum (API Gateway HTTP API, payload v2)."""

from __future__ import annotations

from mangum import Mangum

from lambdas.api.app import create_app

handler = Mangum(create_app(), lifespan="off")
