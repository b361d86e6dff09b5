"""FastAPI dependencies: the caller's identity (Bearer JWT or x-api-key) and the adapters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header

from lambdas.adapters.auth import Identity
from lambdas.adapters.cache import Cache
from lambdas.adapters.db import Database
from lambdas.errors import Forbidden, Unauthorized
from lambdas.runtime import Deps, deps

Caller = Identity


def get_deps() -> Deps:
    return deps()


DepsDep = Annotated[Deps, Depends(get_deps)]


def get_caller(
    d: DepsDep,
    authorization: Annotated[str | None, Header(max_length=16384)] = None,
    x_api_key: Annotated[str | None, Header(max_length=1024)] = None,
) -> Caller:
    if x_api_key:
        from lambdas.services.api_keys import ApiKeyService

        return ApiKeyService(d).authenticate(x_api_key)
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("Send Authorization: Bearer <token> or an x-api-key header.")
    return d.verifier.verify(authorization[7:].strip())


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_database(d: DepsDep) -> Database:
    return d.db


def get_cache(d: DepsDep) -> Cache:
    return d.cache


DatabaseDep = Annotated[Database, Depends(get_database)]
CacheDep = Annotated[Cache, Depends(get_cache)]


def require_scope(scope: str) -> Callable[[Caller], Caller]:
    """A dependency admitting only callers holding `scope`."""

    def check(caller: CallerDep) -> Caller:
        if not caller.has_scope(scope):
            raise Forbidden(f"This needs the {scope!r} scope.")
        return caller

    return check


ChatCallerDep = Annotated[Caller, Depends(require_scope("chat"))]
