"""Which model answers a request: the deployment's offered models (CHATSTACK_MODELS) and, for the
default model, the tenant's LoRA adapter (CHATSTACK_TENANT_ADAPTERS, rendered from the LoRA
profile's `tenant_adapters` / `default_adapter`).

A model that is not offered is refused with BAD_REQUEST naming the choices, never silently replaced.
A model with its own endpoint gets its own client (its own circuit breakers), built once per process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lambdas.config import Settings
from lambdas.errors import BadRequest

if TYPE_CHECKING:
    from lambdas.adapters.model import ModelClient
    from lambdas.runtime import Deps

DEFAULT_ADAPTER_KEY = "*"


@dataclass(frozen=True)
class OfferedModel:
    name: str
    endpoint: str  # "" = the deployment's CHATSTACK_MODEL_ENDPOINT


@dataclass(frozen=True)
class Selection:
    model: OfferedModel
    adapter: str | None
    client: ModelClient


def _pairs(raw: str, setting: str) -> list[tuple[str, str]]:
    pairs = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, _, value = item.partition("=")
        if not name.strip():
            raise ValueError(f"{setting}: {item!r} has no name")
        pairs.append((name.strip(), value.strip()))
    return pairs


def offered(settings: Settings) -> list[OfferedModel]:
    """The models this deployment offers, the default first. Without CHATSTACK_MODELS: one, the
    deployment's model profile on its endpoint."""
    models = [OfferedModel(name, endpoint) for name, endpoint in _pairs(settings.models, "CHATSTACK_MODELS")]
    return models or [OfferedModel(settings.model_profile, "")]


def tenant_adapter(settings: Settings, tenant_id: str) -> str | None:
    """The LoRA adapter of `tenant_id` on the default model (`*` maps every tenant not listed)."""
    table = dict(_pairs(settings.tenant_adapters, "CHATSTACK_TENANT_ADAPTERS"))
    return table.get(tenant_id) or table.get(DEFAULT_ADAPTER_KEY) or None


def choose(settings: Settings, requested: str | None) -> OfferedModel:
    """The offered model called `requested` (the default when None); BadRequest names the choices."""
    models = offered(settings)
    if not requested:
        return models[0]
    for model in models:
        if model.name == requested:
            return model
    names = ", ".join(m.name for m in models)
    raise BadRequest(f"Unknown model {requested!r}; this deployment offers: {names}.")


_clients: dict[str, ModelClient] = {}
_lock = threading.Lock()


def _client(deps: Deps, model: OfferedModel) -> ModelClient:
    if not model.endpoint or model.endpoint == deps.settings.model_endpoint:
        return deps.model
    with _lock:
        if model.endpoint not in _clients:
            from lambdas.adapters.model import model_client_from_settings

            own = deps.settings.model_copy(
                update={"model_endpoint": model.endpoint, "model_fallback_endpoint": "",
                        "model_profile": model.name}
            )
            # its breakers shared through Redis like the default client's, keyed by its own endpoint
            _clients[model.endpoint] = model_client_from_settings(own, cache=deps.cache)
        return _clients[model.endpoint]


def select(deps: Deps, *, tenant_id: str, requested: str | None) -> Selection:
    """The model, adapter and client for one request of `tenant_id`."""
    model = choose(deps.settings, requested)
    is_default = model == offered(deps.settings)[0]
    adapter = tenant_adapter(deps.settings, tenant_id) if is_default else None
    return Selection(model=model, adapter=adapter, client=_client(deps, model))
