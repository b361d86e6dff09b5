"""Pass-through to any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, another chatstack
model server): `POST {upstream}/v1/chat/completions` with `stream: true`, read as SSE `data:` lines.

A LoRA adapter is asked for the way vLLM serves them: as the `model` name of the request.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from sagemaker_containers.server.backends.base import BackendError, ChatRequest, TokenEvent

READY_CACHE_S = 5.0


class OpenAICompatBackend:
    """`upstream` is the server's base URL (without /v1). `model` defaults to the first model the
    upstream lists at /v1/models."""

    name = "openai"

    def __init__(
        self,
        upstream: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 70.0,
    ) -> None:
        if not upstream.startswith(("http://", "https://")):
            raise BackendError(f"upstream must be an http(s) URL, not {upstream!r}", status=400)
        self.upstream = upstream.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
        self._headers = headers
        self._client = httpx.AsyncClient(base_url=self.upstream, headers=headers, timeout=self._timeout)
        self._ready_at = -READY_CACHE_S
        self._ready = False

    def ready(self) -> bool:
        """Whether the upstream answers /v1/models (checked at most every few seconds; blocking, so
        the server calls it from a worker thread)."""
        now = time.monotonic()
        if now - self._ready_at >= READY_CACHE_S:
            try:
                reply = httpx.get(f"{self.upstream}/v1/models", headers=self._headers, timeout=2.0)
                self._ready = reply.status_code == 200
            except httpx.HTTPError:
                self._ready = False
            self._ready_at = now
        return self._ready

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _model_name(self, request: ChatRequest) -> str:
        if request.adapter:
            return request.adapter
        if self.model is None:
            try:
                reply = await self._client.get("/v1/models")
                reply.raise_for_status()
                self.model = str(reply.json()["data"][0]["id"])
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
                raise BackendError(f"the upstream at {self.upstream} lists no model: {exc}") from exc
        return self.model

    async def generate(self, request: ChatRequest) -> AsyncIterator[TokenEvent]:
        body: dict[str, Any] = {
            "model": await self._model_name(request),
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        try:
            async with self._client.stream("POST", "/v1/chat/completions", json=body) as reply:
                if reply.status_code != 200:
                    detail = (await reply.aread()).decode("utf-8", "replace")[:500]
                    status = 400 if reply.status_code in (400, 404, 422) else 424
                    raise BackendError(f"the upstream answered {reply.status_code}: {detail}", status=status)
                async for event in _events(reply.aiter_lines()):
                    yield event
        except httpx.HTTPError as exc:
            raise BackendError(f"the upstream at {self.upstream} failed: {exc}") from exc


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[TokenEvent]:
    """TokenEvents from SSE lines. The finish is held until the usage chunk (or the end) so that
    the last event carries both."""
    finish: str | None = None
    usage = (0, 0)
    done = False
    async for line in lines:
        if not line.startswith("data:"):
            continue  # blank separators, comments, event/id fields
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            done = True
            break
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise BackendError(f"the upstream sent an unreadable line: {data[:200]}") from None
        if not isinstance(chunk, dict):
            raise BackendError("the upstream sent a line that is not a JSON object")
        if chunk.get("error"):
            raise BackendError(f"the upstream failed mid-stream: {chunk['error']}")
        if isinstance(chunk.get("usage"), dict):
            usage = (int(chunk["usage"].get("prompt_tokens") or 0),
                     int(chunk["usage"].get("completion_tokens") or 0))
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content") or ""
            if choice.get("finish_reason") == "error":
                raise BackendError("the upstream model failed mid-stream")
            finish = choice.get("finish_reason") or finish
            if text:
                yield TokenEvent(text)
    if finish is None and not done:
        raise BackendError("the upstream stream ended before its finish")
    yield TokenEvent("", finish or "stop", *usage)
