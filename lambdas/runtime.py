"""Process-wide dependencies, built lazily once per process (a Lambda cold start, or `chatstack up`).

Handlers call `deps()`; tests build a `Deps` of their own against real servers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload
from urllib.parse import quote

from lambdas.adapters.auth import JwtVerifier
from lambdas.adapters.cache import Cache
from lambdas.adapters.connections import Connections
from lambdas.adapters.db import Database
from lambdas.adapters.queue import JobQueue
from lambdas.config import Settings, get_settings

if TYPE_CHECKING:
    from lambdas.adapters.model import ModelClient
    from lambdas.rag.retriever import Retriever


def _secret(settings: Settings, secret_id: str) -> dict[str, Any]:
    import boto3

    client = boto3.client("secretsmanager", region_name=settings.region)
    value: dict[str, Any] = json.loads(client.get_secret_value(SecretId=secret_id)["SecretString"])
    return value


def _database_url(settings: Settings) -> str:
    """Locally a URL; in the cloud the RDS Proxy host plus the credentials in Secrets Manager, or,
    with `database_user`, that user with no password (IAM auth: see `database_password`)."""
    if settings.database_url:
        return settings.database_url
    if settings.database_user:
        user = quote(settings.database_user, safe="")
        return f"postgresql://{user}@{settings.database_host}:5432/{settings.database_name}?sslmode=require"
    if not settings.database_secret_arn:
        return settings.database_url
    secret = _secret(settings, settings.database_secret_arn)
    host = settings.database_host or secret["host"]
    user, password = quote(str(secret["username"]), safe=""), quote(str(secret["password"]), safe="")
    name = settings.database_name or secret.get("dbname", "chatstack")
    return f"postgresql://{user}:{password}@{host}:{secret.get('port', 5432)}/{name}?sslmode=require"


# Public name for callers outside this module (the readiness route builds a reader URL with it).
database_url = _database_url


def database_password(settings: Settings) -> Callable[[], str] | None:
    """With `database_user` (cloud), a fresh RDS IAM auth token per connection: the function reads no
    secret; its role may only `rds-db:connect` as that user through the proxy. Tokens are presigned
    locally (no AWS call) and live 15 minutes, long enough to open a connection.
    https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy-connecting.html (IAM authentication)"""
    if settings.database_url or not settings.database_user:
        return None
    import boto3

    client = boto3.client("rds", region_name=settings.region)
    host, user, region = settings.database_host, settings.database_user, settings.region

    def token() -> str:
        value: str = client.generate_db_auth_token(DBHostname=host, Port=5432, DBUsername=user, Region=region)
        return value

    return token


def _redis_url(settings: Settings) -> str:
    """Adds the AUTH token from Secrets Manager to a rediss:// URL (cloud); local URLs pass through."""
    if not settings.redis_auth_secret_id:
        return settings.redis_url
    token = quote(str(_secret(settings, settings.redis_auth_secret_id)["token"]), safe="")
    scheme, rest = settings.redis_url.split("://", 1)
    return f"{scheme}://default:{token}@{rest.split('@')[-1]}"


T = TypeVar("T")


class _built_once(Generic[T]):
    """A lazy attribute built at most once even when many worker threads ask at the same moment
    (functools.cached_property holds no lock): two database pools or two embedding models would
    otherwise be built on a busy cold start."""

    def __init__(self, build: Callable[[Deps], T]) -> None:
        self.build = build
        self.name = build.__name__
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Deps]) -> _built_once[T]: ...
    @overload
    def __get__(self, obj: Deps, owner: type[Deps]) -> T: ...
    def __get__(self, obj: Deps | None, owner: type[Deps]) -> T | _built_once[T]:
        if obj is None:
            return self
        if self.name not in obj.__dict__:
            with obj._lock:
                if self.name not in obj.__dict__:
                    obj.__dict__[self.name] = self.build(obj)
        return cast(T, obj.__dict__[self.name])


@dataclass
class Deps:
    settings: Settings
    # Re-entrant: building the retriever needs the database.
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @_built_once
    def db(self) -> Database:
        db = Database(
            _database_url(self.settings),
            max_size=self.settings.database_pool_max,
            password=database_password(self.settings),
            deadline_s=self.settings.database_deadline_s,
        )
        if self.settings.environment == "cloud":
            db.migrate()  # once per container; a no-op query when up to date, serialized by an advisory lock
        return db

    @_built_once
    def cache(self) -> Cache:
        return Cache.from_url(_redis_url(self.settings))

    @_built_once
    def connections(self) -> Connections:
        return Connections(self.settings.connections_url, region=self.settings.region)

    @_built_once
    def queue(self) -> JobQueue:
        return JobQueue(
            self.settings.queue_url, region=self.settings.region, endpoint_url=self.settings.sqs_endpoint_url
        )

    @_built_once
    def model(self) -> ModelClient:
        from lambdas.adapters.model import model_client_from_settings

        return model_client_from_settings(self.settings, cache=self.cache)

    @_built_once
    def verifier(self) -> JwtVerifier:
        return JwtVerifier(self.settings)

    @_built_once
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
