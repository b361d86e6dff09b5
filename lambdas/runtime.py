"""Process-wide dependencies, built lazily once per process (a Lambda cold start, or `chatstack up`).

Handlers call `deps()`; tests build a `Deps` of their own against real servers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from lambdas.adapters.auth import JwtVerifier
from lambdas.adapters.cache import Cache
from lambdas.adapters.connections import Connections
from lambdas.adapters.db import Database
from lambdas.adapters.queue import JobQueue
from lambdas.config import Settings, get_settings

if TYPE_CHECKING:
    from lambdas.adapters.model import ModelClient
    from lambdas.rag.retriever import Retriever


def _database_url(settings: Settings) -> str:
    if settings.database_url or not settings.database_secret_arn:
        return settings.database_url
    # Cloud: credentials live in Secrets Manager (the RDS Proxy endpoint is in the secret's host).
    import json

    import boto3

    secret = json.loads(
        boto3.client("secretsmanager", region_name=settings.region).get_secret_value(
            SecretId=settings.database_secret_arn
        )["SecretString"]
    )
    host = settings.database_url or secret["host"]
    return (
        f"postgresql://{secret['username']}:{secret['password']}@{host}:{secret.get('port', 5432)}"
        f"/{secret.get('dbname', 'chatstack')}?sslmode=require"
    )


@dataclass
class Deps:
    settings: Settings
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def db(self) -> Database:
        return Database(_database_url(self.settings), max_size=self.settings.database_pool_max)

    @cached_property
    def cache(self) -> Cache:
        return Cache.from_url(self.settings.redis_url)

    @cached_property
    def connections(self) -> Connections:
        return Connections(self.settings.connections_url, region=self.settings.region)

    @cached_property
    def queue(self) -> JobQueue:
        return JobQueue(self.settings.queue_url, region=self.settings.region,
                        endpoint_url=self.settings.sqs_endpoint_url)

    @cached_property
    def model(self) -> ModelClient:
        from lambdas.adapters.model import model_client_from_settings

        return model_client_from_settings(self.settings)

    @cached_property
    def verifier(self) -> JwtVerifier:
        return JwtVerifier(self.settings)

    @cached_property
    def retriever(self) -> Retriever | None:
        if not self.settings.rag_enabled:
            return None
        from lambdas.rag.retriever import retriever_from_settings

        return retriever_from_settings(self.settings, self.db)


_deps: Deps | None = None
_deps_lock = threading.Lock()


def deps() -> Deps:
    global _deps
    if _deps is None:
        with _deps_lock:
            if _deps is None:
                _deps = Deps(get_settings())
    return _deps


def set_deps(value: Deps | None) -> None:
    """Install (or clear) the process-wide dependencies: tests and the local runtime."""
    global _deps
    _deps = value
