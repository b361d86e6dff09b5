"""Model backends of the local server, loaded by name.

The transformers and llamacpp backends are imported lazily so that torch or llama.cpp is only
imported when it is asked for.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from sagemaker_containers.server.backends.base import Backend, BackendError, ChatRequest, TokenEvent

__all__ = ["BACKENDS", "Backend", "BackendError", "ChatRequest", "TokenEvent", "load_backend"]

# name -> (module, class); modules are imported only when their backend is loaded.
BACKENDS: dict[str, tuple[str, str]] = {
    "extractive": ("sagemaker_containers.server.backends.extractive", "ExtractiveBackend"),
    "openai": ("sagemaker_containers.server.backends.openai_compat", "OpenAICompatBackend"),
    "transformers": ("sagemaker_containers.server.backends.transformers_backend", "TransformersBackend"),
    "llamacpp": ("sagemaker_containers.server.backends.llamacpp", "LlamaCppBackend"),
}


def load_backend(name: str, **options: Any) -> Backend:
    """Build the backend called `name` with its keyword options (see each backend's constructor)."""
    try:
        module_name, class_name = BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(sorted(BACKENDS))}") from None
    backend_cls = getattr(import_module(module_name), class_name)
    backend: Backend = backend_cls(**options)
    return backend
