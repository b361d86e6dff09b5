"""The local model server: the LMI container contract, an OpenAI-compatible route, and a SageMaker
runtime stand-in, all over one backend.

Routes
- `GET /ping`: 200 when the backend is ready, 503 otherwise (the container health check).
- `POST /invocations`: LMI's chat-completions schema. `stream: true` answers `application/jsonlines`,
  one bare `chat.completion.chunk` per line, the last content chunk carrying `finish_reason`, then a
  usage-only chunk (empty `choices`). A bad body is a 400 `{"error", "code"}`, a backend refusal
  before the first token a 424-style error body, and a failure mid-stream a last line with
  `finish_reason: "error"`, as LMI does.
- `POST /v1/chat/completions`, `GET /v1/models`: the OpenAI-compatible shape (SSE `data:` lines and
  `data: [DONE]`), what vLLM, llama.cpp and Ollama serve.
- `POST /endpoints/{name}/invocations-response-stream` and `POST /endpoints/{name}/invocations`:
  a stand-in for the SageMaker runtime API (InvokeEndpointWithResponseStream / InvokeEndpoint), so
  that boto3's `sagemaker-runtime` client works unchanged with `endpoint_url`. The container's bytes
  travel in PayloadPart events cut at arbitrary offsets (see `eventstream.py`). Errors before the
  stream are the modelled operation errors (ValidationError 400, ModelError 424, ServiceUnavailable
  503) in the rest-json shape botocore parses (`X-Amzn-ErrorType` header, `Message` body field). A
  backend failure mid-stream is what SageMaker reports when the container's stream breaks: a
  `ModelStreamError` event (ErrorCode `StreamBroken`) for a model error, an `InternalStreamFailure`
  event for anything unexpected.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sagemaker_containers.server import eventstream
from sagemaker_containers.server.backends.base import Backend, BackendError, ChatRequest, TokenEvent

log = logging.getLogger(__name__)

ADAPTER_HEADER = "x-amzn-sagemaker-adapter-identifier"
MAX_BODY_BYTES = 6_291_456  # InvokeEndpoint's documented payload limit
JSONLINES = "application/jsonlines"
VARIANT = {"x-Amzn-Invoked-Production-Variant": "AllTraffic"}


class BadBody(ValueError):
    """The request body does not follow the chat-completions schema; the message says why."""


class _Part(BaseModel):
    type: str = "text"
    text: str | None = None


class _Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[_Part] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class _StreamOptions(BaseModel):
    include_usage: bool = False


class ChatBody(BaseModel):
    """The fields of LMI's chat-completions schema that the server honours; others are ignored."""

    model_config = ConfigDict(extra="ignore")

    messages: list[_Message] = Field(min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    adapters: str | None = None
    stream_options: _StreamOptions | None = None


def parse_body(raw: bytes, headers: dict[str, str], default_max_tokens: int) -> tuple[ChatRequest, ChatBody]:
    """Validate a chat-completions body; raises BadBody with one sentence naming the first problem."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadBody("the request body is not valid JSON") from None
    if not isinstance(data, dict) or "messages" not in data:
        raise BadBody("the request body must be a JSON object with a 'messages' list")
    try:
        body = ChatBody.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadBody(f"{where}: {first['msg']}") from None
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    request = ChatRequest(
        messages=[{"role": m.role, "content": m.text()} for m in body.messages],
        max_tokens=body.max_tokens or body.max_completion_tokens or default_max_tokens,
        temperature=0.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stop=stop,
        seed=body.seed,
        adapter=body.adapters or headers.get(ADAPTER_HEADER) or None,
    )
    return request, body


@dataclass
class Completion:
    """The identity of one response, shared by all its chunks."""

    model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def chunk(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish_reason}
        return {**self._head("chat.completion.chunk"), "choices": [choice]}

    def usage_chunk(self, prompt: int, completion: int) -> dict[str, Any]:
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": _usage(prompt, completion)}

    def whole(self, text: str, finish_reason: str, prompt: int, completion: int) -> dict[str, Any]:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish_reason}
        return {**self._head("chat.completion"), "choices": [choice], "usage": _usage(prompt, completion)}


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def error_body(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message, "code": status}, status_code=status)


@dataclass
class Started:
    """A generation whose first event has arrived (so the backend accepted the request)."""

    request: ChatRequest
    body: ChatBody
    first: TokenEvent | None
    rest: AsyncIterator[TokenEvent]
    completion: Completion

    async def chunks(self, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
        """The chunk objects of the answer; raises whatever the backend raises mid-stream."""
        try:
            event = self.first
            last = TokenEvent("", "stop")
            while event is not None:
                yield self.completion.chunk(event.text, event.finish_reason)
                if event.finish_reason:
                    last = event
                    break
                event = await anext(self.rest, None)
            else:  # the backend ended without a finish reason: close the answer properly
                yield self.completion.chunk("", "stop")
            if include_usage:
                yield self.completion.usage_chunk(last.prompt_tokens, last.completion_tokens)
        finally:
            await self.close()

    async def close(self) -> None:
        aclose = getattr(self.rest, "aclose", None)
        if aclose is not None:
            await aclose()


async def start(backend: Backend, raw: bytes, headers: dict[str, str], default_max_tokens: int) -> Started:
    """Parse and start a generation. Raises BadBody, or BackendError when the backend refuses."""
    request, body = parse_body(raw, headers, default_max_tokens)
    stream = backend.generate(request)
    try:
        first = await anext(stream, None)
    except BackendError:
        raise
    except Exception as exc:
        log.exception("backend failed before its first token")
        raise BackendError(f"the model failed: {exc}") from exc
    return Started(request, body, first, stream, Completion(body.model or backend.name))


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n"


async def jsonlines(started: Started, *, catch: bool) -> AsyncIterator[bytes]:
    """The container's byte stream. With `catch`, a failure mid-stream ends it with a
    finish_reason "error" line (what LMI writes); without, the failure propagates."""
    try:
        async for chunk in started.chunks(include_usage=True):
            yield _line(chunk)
    except Exception as exc:
        if not catch:
            raise
        log.warning("backend failed mid-stream: %s", exc)
        yield _line(started.completion.chunk("", "error"))


async def collect(started: Started) -> dict[str, Any]:
    """The whole (non-streamed) chat.completion; raises what the backend raises."""
    parts: list[str] = []
    finish, usage = "stop", (0, 0)
    async for chunk in started.chunks(include_usage=True):
        if chunk["choices"]:
            parts.append(chunk["choices"][0]["delta"]["content"])
            finish = chunk["choices"][0]["finish_reason"] or finish
        else:
            usage = (chunk["usage"]["prompt_tokens"], chunk["usage"]["completion_tokens"])
    return started.completion.whole("".join(parts), finish, *usage)


def create_app(
    backend: Backend,
    *,
    payload_split: int = 0,
    default_max_tokens: int = 512,
    endpoint_names: Collection[str] | None = None,
) -> Starlette:
    """The ASGI app. `payload_split` cuts the stand-in's PayloadParts every N bytes (0: one part per
    container write); `endpoint_names`, when given, are the only endpoints the stand-in knows."""
    if payload_split < 0:
        raise ValueError("payload_split must be zero or positive")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await backend.aclose()

    async def begin(request: Request) -> Started | Response:
        raw = await request.body()
        try:
            return await start(backend, raw, dict(request.headers), default_max_tokens)
        except BadBody as exc:
            return error_body(str(exc), 400)
        except BackendError as exc:
            return error_body(exc.message, exc.status)

    async def ping(_: Request) -> Response:
        ok = await run_in_threadpool(backend.ready)
        return JSONResponse({"status": "Healthy" if ok else "Unhealthy"}, status_code=200 if ok else 503)

    async def invocations(request: Request) -> Response:
        started = await begin(request)
        if isinstance(started, Response):
            return started
        if started.body.stream:
            return StreamingResponse(jsonlines(started, catch=True), media_type=JSONLINES)
        return await invocations_whole(started)

    async def openai_chat(request: Request) -> Response:
        started = await begin(request)
        if isinstance(started, Response):
            return started
        if not started.body.stream:
            return await invocations_whole(started)
        include_usage = bool(started.body.stream_options and started.body.stream_options.include_usage)
        return StreamingResponse(sse(started, include_usage), media_type="text/event-stream")

    async def invocations_whole(started: Started) -> Response:
        try:
            return JSONResponse(await collect(started))
        except Exception as exc:
            log.warning("backend failed mid-answer: %s", exc)
            return error_body(f"the model failed: {exc}", 424)

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": backend.name, "object": "model"}]})

    async def runtime_stream(request: Request) -> Response:
        refused = await runtime_refusal(request)
        if refused is not None:
            return refused
        started = await begin(request)
        if isinstance(started, Response):
            return model_error(started)
        content = jsonlines(started, catch=False) if started.body.stream else whole_bytes(started)
        return StreamingResponse(
            events(content, payload_split),
            media_type=eventstream.CONTENT_TYPE,
            headers={
                "X-Amzn-SageMaker-Content-Type": JSONLINES if started.body.stream else "application/json",
                **VARIANT,
            },
        )

    async def runtime_invoke(request: Request) -> Response:
        refused = await runtime_refusal(request)
        if refused is not None:
            return refused
        started = await begin(request)
        if isinstance(started, Response):
            return model_error(started)
        if started.body.stream:
            data = b"".join([part async for part in jsonlines(started, catch=True)])
            return Response(data, media_type=JSONLINES, headers=VARIANT)
        response = await invocations_whole(started)
        if response.status_code != 200:
            return model_error(response)
        response.headers.update(VARIANT)
        return response

    async def runtime_refusal(request: Request) -> Response | None:
        name = request.path_params["endpoint_name"]
        if endpoint_names is not None and name not in endpoint_names:
            message = f"Endpoint {name} of account 000000000000 not found."
            return runtime_error("ValidationError", 400, message)
        if len(await request.body()) > MAX_BODY_BYTES:
            return runtime_error("ValidationError", 400, "Request body is larger than 6291456 bytes.")
        if not await run_in_threadpool(backend.ready):
            return runtime_error("ServiceUnavailable", 503, f"Endpoint {name} is not ready.")
        return None

    return Starlette(
        # Under `chatstack up` only the run's processes may use the model (CHATSTACK_INTERNAL_SECRET);
        # /ping stays open: it tells nothing but "ready".
        middleware=_internal_guard(),
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
            Route("/v1/chat/completions", openai_chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/endpoints/{endpoint_name}/invocations-response-stream", runtime_stream, methods=["POST"]),
            Route("/endpoints/{endpoint_name}/invocations", runtime_invoke, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def _internal_guard() -> list[Middleware]:
    secret = os.environ.get("CHATSTACK_INTERNAL_SECRET", "")
    if not secret:
        return []
    from chatstack.local.internal_auth import SecretGuard

    return [Middleware(SecretGuard, secret=secret, open_paths=frozenset({"/ping"}))]


async def whole_bytes(started: Started) -> AsyncIterator[bytes]:
    yield json.dumps(await collect(started), ensure_ascii=False).encode("utf-8")


async def sse(started: Started, include_usage: bool) -> AsyncIterator[bytes]:
    try:
        async for chunk in started.chunks(include_usage):
            yield b"data: " + _line(chunk) + b"\n"
    except Exception as exc:
        log.warning("backend failed mid-stream: %s", exc)
        yield b"data: " + _line(started.completion.chunk("", "error")) + b"\n"
    yield b"data: [DONE]\n\n"


async def events(content: AsyncIterator[bytes], split: int) -> AsyncIterator[bytes]:
    """PayloadPart events for the container's bytes; a failure becomes a stream exception event."""
    try:
        async for part in eventstream.payload_parts(content, split):
            yield part
    except BackendError as exc:
        message = f"Model stream broke: {exc.message}"
        yield eventstream.exception_event("ModelStreamError", message, "StreamBroken")
    except Exception as exc:
        log.exception("stream failed")
        yield eventstream.exception_event("InternalStreamFailure", f"The stream processing failed: {exc}")


def runtime_error(code: str, status: int, message: str, **extra: Any) -> JSONResponse:
    """A modelled sagemaker-runtime operation error, as botocore's rest-json parser reads it."""
    return JSONResponse({"Message": message, **extra}, status_code=status, headers={"X-Amzn-ErrorType": code})


def model_error(container: Response) -> JSONResponse:
    """What SageMaker answers when the container answers an error: ModelError (424)."""
    status = container.status_code
    original = bytes(container.body).decode("utf-8", "replace")
    kind = "client" if status < 500 else "server"
    return runtime_error(
        "ModelError", 424, f'Received {kind} error ({status}) from primary with message "{original}".',
        OriginalStatusCode=status, OriginalMessage=original,
    )

