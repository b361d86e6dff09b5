"""Who is calling, from the two headers the HTTP APIs accept: `x-api-key`, or `Authorization: Bearer`
carrying either a JWT or an API key (what OpenAI-style SDKs send). One function, so the REST app and
the HTTP API's Lambda authorizer can never accept different credentials."""

from __future__ import annotations

from lambdas.adapters.auth import Identity
from lambdas.errors import Unauthorized
from lambdas.runtime import Deps
from lambdas.services.api_keys import KEY_PREFIX, ApiKeyService


def identity_from_headers(d: Deps, *, authorization: str | None, x_api_key: str | None) -> Identity:
    if x_api_key:
        return ApiKeyService(d).authenticate(x_api_key)
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("Send Authorization: Bearer <token or API key> or an x-api-key header.")
    credential = authorization[7:].strip()
    if credential.startswith(KEY_PREFIX):  # a JWT starts with "eyJ", never with the key prefix
        return ApiKeyService(d).authenticate(credential)
    return d.verifier.verify(credential)
