"""Which exceptions mean "a dependency is down" (PostgreSQL, Redis), as opposed to a bug.

A handler turns these into `INTERNAL` with `retryAfter`: the client should retry the same request
shortly, and the connection stays usable.
"""

from __future__ import annotations

import psycopg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

UNAVAILABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # includes psycopg_pool.PoolTimeout
    RedisConnectionError,
    RedisTimeoutError,
)


def dependency_down(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE)
