"""FastAPI dependencies: the caller's identity (Bearer JWT or x-api-key) and the adapters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Request

from lambdas.adapters.auth import Identity
from lambdas.adapters.cache import Cache
from lambdas.adapters.db import Database
from lambdas.errors import Forbidden
from lambdas.runtime import Deps, deps

Caller = Identity


def get_deps() -> Deps:
    return deps()


DepsDep = Annotated[Deps, Depends(get_deps)]


def get_caller(
    request: Request,
    d: DepsDep,
    authorization: Annotated[str | None, Header(max_length=16384)] = None,
    x_api_key: Annotated[str | None, Header(max_length=1024)] = None,
) -> Caller:
    # In the cloud the HTTP API's Lambda authorizer has already verified the caller: Mangum puts the
    # API Gateway event in the scope, with the authorizer's context under requestContext.authorizer.
    # Only API Gateway writes that event, so a client cannot forge it; without one (local), check here.
    checked = request.scope.get("state", {}).get("chatstack.caller")  # by the RequestGuard, before the body
    if isinstance(checked, Identity):
        return checked
    event = request.scope.get("aws.event")
    if isinstance(event, dict):
        authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
        if isinstance(authorizer.get("lambda"), dict):
            return Identity.from_context(authorizer["lambda"])
    from lambdas.services.credentials import identity_from_headers

    return identity_from_headers(d, authorization=authorization, x_api_key=x_api_key)


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
