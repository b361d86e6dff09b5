"""The backend interface of the local model server: one chat request in, a stream of token events out.

Every backend (extractive, OpenAI-compatible pass-through, transformers) implements `Backend`; the
HTTP layer in `app.py` only ever sees these types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ChatRequest:
    """One chat-completions request, already validated by the HTTP layer."""

    messages: list[dict[str, str]]  # {"role": "system"|"user"|"assistant", "content": str}
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # LoRA adapter (LMI body field "adapters" or header X-Amzn-SageMaker-Adapter-Identifier)
    adapter: str | None = None


@dataclass(frozen=True)
class TokenEvent:
    """A piece of generated text. The last event of a stream carries `finish_reason` and the counts."""

    text: str
    finish_reason: str | None = None  # set on the last event: "stop" | "length" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class Backend(Protocol):
    name: str

    def ready(self) -> bool: ...

    def generate(self, request: ChatRequest) -> AsyncIterator[TokenEvent]:
        """An async generator of token events; raising BackendError before the first event means
        the request was refused, raising anything after it means the stream broke."""
        ...

    async def aclose(self) -> None: ...


class BackendError(Exception):
    """The backend cannot serve this request (unloadable model, unknown adapter, upstream down);
    raised before streaming starts, answered with a 4xx/5xx."""

    def __init__(self, message: str, *, status: int = 424) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
