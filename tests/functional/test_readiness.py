"""`GET /readyz`, the standby readiness Route 53 checks on a secondary region (cdk/stacks/routing.py):
a database read and a cache PING, over real PostgreSQL and Redis. It does not need the model endpoint
(which /healthz does), and it fails, naming the check, when the cache is gone."""

from __future__ import annotations

import socket
from collections.abc import Iterator

from fastapi.testclient import TestClient

from lambdas.api.app import create_app
from lambdas.config import Settings
from lambdas.runtime import Deps, set_deps


def _client(settings: Settings) -> Iterator[TestClient]:
    d = Deps(settings)
    set_deps(d)
    try:
        with TestClient(create_app(), raise_server_exceptions=False) as client:
            yield client
    finally:
        set_deps(None)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_standby_is_ready_with_a_database_read_and_a_cache_ping(pg_url: str, redis_url: str) -> None:
    settings = Settings(environment="test", database_url=pg_url, redis_url=redis_url,
                        model_endpoint=f"http://127.0.0.1:{_closed_port()}/invocations")
    for client in _client(settings):
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) == {"database_reader", "redis"}
        # The deep check also needs the model server, which is down here: the roles differ.
        assert client.get("/healthz").status_code == 503


def test_a_standby_without_its_cache_is_not_ready(pg_url: str) -> None:
    settings = Settings(environment="test", database_url=pg_url,
                        redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    for client in _client(settings):
        ready = client.get("/readyz")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["database_reader"]["ok"] is True and checks["redis"]["ok"] is False
