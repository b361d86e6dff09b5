"""OpenAI-compatible access: `POST /v1/chat/completions` and `GET /v1/models`, on the chat pipeline.

A completion is a `sendMessage` by another door: ChatService accepts it (scope, rate limits and
quotas, the stored user message, the queued job), the worker answers it (memory, retrieval, the
model, the usage ledger) and publishes its frames to the request's Redis stream, which this router
follows and translates into OpenAI's `chat.completion` / `chat.completion.chunk` shapes.

- Auth: what the OpenAI SDKs send, `Authorization: Bearer <JWT or API key>` (or `x-api-key`).
- `model`: one of GET /v1/models (CHATSTACK_MODELS); anything else is a 400 naming the choices.
- Memory: with a `conversation_id` (an extra body field; every answer carries it back) the server's
  stored history is used and earlier messages in the body are ignored. Without one, a new
  conversation starts and the body's earlier user/assistant turns are its history. The deployment's
  system prompt applies; `system` messages from the client are not used.
- `citations` (extra field) lists the retrieved passages the answer cites as [n].
- Streaming in the cloud needs a route that can stream (docs/protocol.md): behind Mangum on API
  Gateway the response is buffered and arrives whole.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lambdas import protocol
from lambdas.adapters.auth import Identity
from lambdas.api.deps import ChatCallerDep, DepsDep
from lambdas.errors import (
    BY_CODE,
    AnswerTimeout,
    BadRequest,
    ChatError,
    Internal,
    NotFound,
    Unavailable,
    error_document,
)
from lambdas.runtime import Deps
from lambdas.services import models as model_choice

router = APIRouter(prefix="/v1", tags=["openai"])

POLL_S = 0.05  # how often the request's Redis stream is read while waiting for the next frame
# A cancelled answer (its conversation deleted mid-answer, or a `cancel` of it) is not a complete one:
# it keeps its own name, which OpenAI's list lacks, rather than pass for "stop".
FINISH = {"stop": "stop", "length": "length", "cancelled": "cancelled"}

# Request fields of OpenAI's API that the service accepts and does not use: they change nothing a
# client can see in the answer (end-user tags, caching and storage hints, sampling it does not offer).
IGNORED = frozenset({
    "user", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "metadata", "store",
    "parallel_tool_calls", "service_tier", "prompt_cache_key", "safety_identifier",
})


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str = Field(default="text", description="Only text parts: images, audio and files are a 400.")
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Part] | None = None

    @model_validator(mode="after")
    def _text_only(self) -> ChatMessage:
        if isinstance(self.content, list) and any(p.type != "text" for p in self.content):
            raise BadRequest("messages: only text content parts are supported.", param="messages")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = Field(default=False, strict=True)


class CompletionRequest(BaseModel):
    """The fields of OpenAI's chat-completions request that the service honours, typed as OpenAI
    types them and not coerced (as on the WebSocket: `"5"` or `true` is no token limit). Fields that
    would change the answer and that the service cannot honour (`tools`, a JSON `response_format`,
    `logprobs`) are refused when set, not ignored; IGNORED lists those accepted and
    unused; anything else is refused by name, as OpenAI's API refuses it."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=protocol.MAX_ID_CHARS, strict=True)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool = Field(default=False, strict=True)
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=8192, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192, strict=True)
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    top_p: float | None = Field(default=None, gt=0, le=1, strict=True)
    n: int = Field(default=1, ge=1, le=1, strict=True)
    conversation_id: uuid.UUID | None = None
    stop: str | list[str] | None = None  # checked as the WebSocket's options.stop (4 at most)
    # Refused when set to anything but their "off" value (None, empty, "text", false, "none").
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = Field(default=None, strict=True)
    top_logprobs: int | None = None
    modalities: list[str] | None = None

    @property
    def stops(self) -> list[str]:
        """`stop` as the list it may be given as a string of."""
        return [self.stop] if isinstance(self.stop, str) else self.stop or []

    @model_validator(mode="after")
    def _honoured(self) -> CompletionRequest:
        for name in sorted(set(self.model_extra or {}) - IGNORED):
            raise BadRequest(f"{name}: this request field is not supported.", param=name)
        unsupported = {
            "tools": bool(self.tools),
            "functions": bool(self.functions),
            "tool_choice": self.tool_choice not in (None, "none", "auto"),
            "response_format": (self.response_format or {}).get("type", "text") != "text",
            "logprobs": bool(self.logprobs),
            "top_logprobs": bool(self.top_logprobs),
            "modalities": self.modalities not in (None, [], ["text"]),
        }
        for name, used in unsupported.items():
            if used:
                raise BadRequest(f"{name}: this service does not support it; leave it out.", param=name)
        stops = self.stops
        if len(stops) > protocol.MAX_STOPS or not all(0 < len(s) <= protocol.MAX_STOP_CHARS for s in stops):
            raise BadRequest(
                f"stop: at most {protocol.MAX_STOPS} sequences of 1 to {protocol.MAX_STOP_CHARS} characters.",
                param="stop",
            )
        if None not in (self.max_tokens, self.max_completion_tokens) and (
            self.max_tokens != self.max_completion_tokens
        ):
            raise BadRequest(
                "max_tokens and max_completion_tokens differ; send one of them.", param="max_tokens"
            )
        return self


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "chatstack"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


@router.get("/models", response_model=ModelList)
def list_models(caller: ChatCallerDep, d: DepsDep) -> ModelList:
    """The models `model` (and the WebSocket's `options.model`) may name; the default first."""
    return ModelList(data=[ModelCard(id=m.name) for m in model_choice.offered(d.settings)])


@router.get("/models/{model_id}", response_model=ModelCard)
def get_model(model_id: str, caller: ChatCallerDep, d: DepsDep) -> ModelCard:
    """One offered model (the SDKs' `models.retrieve`); 404 for a name the deployment does not offer."""
    for offered in model_choice.offered(d.settings):
        if offered.name == model_id:
            return ModelCard(id=offered.name)
    raise NotFound(f"No model {model_id[:100]!r} is offered here; GET /v1/models lists them.")


@router.post("/chat/completions", response_model=None)
def chat_completions(
    request: Request, caller: ChatCallerDep, d: DepsDep, body: Annotated[CompletionRequest, Body()]
) -> JSONResponse | StreamingResponse:
    """Answer a chat, streamed as server-sent `chat.completion.chunk` events or whole."""
    model = model_choice.choose(d.settings, body.model).name
    last = body.messages[-1]
    if last.role != "user" or not last.text().strip():
        raise BadRequest("messages: the last message must be a user message with text.")
    rid = str(uuid.uuid4())
    # Not a WebSocket: frames are read from the request's Redis stream, never posted to a connection.
    connection_id = f"openai-{rid}"
    options = {"maxTokens": body.max_tokens or body.max_completion_tokens, "temperature": body.temperature,
               "topP": body.top_p, "model": model, "stop": body.stops or None}
    msg = protocol.send_message({
        "action": "sendMessage",
        "requestId": rid,
        "conversationId": str(body.conversation_id) if body.conversation_id else None,
        "text": last.text(),
        "options": {k: v for k, v in options.items() if v is not None},
    })
    conversation_id = _accept(d, caller, msg, connection_id, body)
    head = {"id": f"chatcmpl-{rid.replace('-', '')}", "created": int(time.time()), "model": model,
            "conversation_id": conversation_id}
    deadline_s, timeout = _deadline(request, d, conversation_id)
    late = protocol.error_frame(timeout, rid)
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = _sse(d, rid, head, _frames_async(d, rid, deadline_s, late), usage)
        return StreamingResponse(chunks, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    return JSONResponse(_whole(head, _frames(d, rid, deadline_s, late), late, timeout))


# What an invocation keeps for itself after the wait: the answer's last poll and Mangum's response.
INVOCATION_MARGIN_S = 2.0


def _deadline(request: Request, d: Deps, conversation_id: str) -> tuple[float, ChatError]:
    """How long to wait for the answer, and the error for when it does not come in time.

    In Lambda (Mangum puts the invocation's context in the scope) the function's own timeout, 29 s
    behind the HTTP API (whose integrations time out at 30 s: "Amazon API Gateway quotas", HTTP APIs),
    usually comes first: the wait then stops short of it and answers a 504 that says where the answer,
    which the worker goes on writing, will be. Otherwise (uvicorn, locally) the model's own timeouts
    bound it."""
    wanted = d.settings.model_timeout_s * 2 + 60
    context = request.scope.get("aws.context")
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        left = remaining() / 1000 - INVOCATION_MARGIN_S
        if left < wanted:
            message = (
                f"The answer takes longer than this API waits ({max(0, round(left))} s); it goes on and is "
                f"stored in conversation {conversation_id}: GET /v1/conversations/{conversation_id}/messages "
                "returns it when it is done."
            )
            return max(0.0, left), AnswerTimeout(message)
    return wanted, Internal("The answer did not arrive in time; please retry.")


def _accept(
    d: Deps, caller: Identity, msg: protocol.SendMessage, connection_id: str, body: CompletionRequest
) -> str:
    from lambdas.services.chat import ChatService

    # A new conversation: the body's earlier turns are its history. Accepting puts them where the worker
    # reads them before the job exists, and reserves the quota such a prompt may fill.
    turns = [{"role": m.role, "content": m.text()} for m in body.messages[:-1]
             if m.role in ("user", "assistant") and m.text()] if body.conversation_id is None else []
    ChatService(d).accept(caller, msg, connection_id, history=turns or None)
    d.cache.unwatch(str(msg.request_id), connection_id)
    record = d.cache.request(str(msg.request_id))
    if record is None or not record.conversation_id:
        raise Internal("The message was accepted but its record is gone; please retry.")
    return record.conversation_id


def _new_frames(d: Deps, rid: str, seen: int) -> list[protocol.ServerFrame]:
    """The frames the worker published for the request after the first `seen`."""
    return [protocol.parse_server_frame(item) for item in (d.cache.replay(rid) or [])[seen:]]


def _frames(d: Deps, rid: str, deadline_s: float, late: protocol.Error) -> Iterator[protocol.ServerFrame]:
    """The request's frames as the worker publishes them, up to and including `done` or `error`."""
    seen = 0
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for frame in (new := _new_frames(d, rid, seen)):
            yield frame
            if isinstance(frame, protocol.Done | protocol.Error):
                return
        seen += len(new)
        time.sleep(POLL_S)
    yield late


async def _frames_async(
    d: Deps, rid: str, deadline_s: float, late: protocol.Error
) -> AsyncIterator[protocol.ServerFrame]:
    """`_frames` on the event loop: the wait between polls is where a client's disconnect cancels the
    response (Starlette cancels it on `http.disconnect`), within POLL_S rather than at the next frame
    a thread would bring back."""
    seen = 0
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for frame in (new := await anyio.to_thread.run_sync(_new_frames, d, rid, seen)):
            yield frame
            if isinstance(frame, protocol.Done | protocol.Error):
                return
        seen += len(new)
        await anyio.sleep(POLL_S)
    yield late


def _citations(done: protocol.Done) -> list[dict[str, Any]]:
    return [c.model_dump(by_alias=True, exclude_none=True) for c in done.citations]


def _usage(done: protocol.Done) -> dict[str, int]:
    i, o = done.usage.input_tokens, done.usage.output_tokens
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


def _error_body(frame: protocol.Error) -> dict[str, Any]:
    return error_document(frame.code, frame.message)


def _whole(
    head: dict[str, Any], frames: Iterator[protocol.ServerFrame], late: protocol.Error, timeout: ChatError
) -> dict[str, Any]:
    parts: list[str] = []
    for frame in frames:
        if isinstance(frame, protocol.Delta):
            if getattr(frame, "restart", None):  # a recovered generation starts its text anew
                parts.clear()
            parts.append(frame.text)
        elif frame is late:
            raise timeout
        elif isinstance(frame, protocol.Error):
            if frame.code == "INTERNAL" and frame.retry_after:  # a dependency down: retry shortly (503)
                raise Unavailable(frame.retry_after, frame.message)
            raise BY_CODE.get(frame.code, Internal)(frame.message, retry_after=frame.retry_after)
        elif isinstance(frame, protocol.Done):
            text = getattr(frame, "text", None) or "".join(parts)
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": FINISH.get(frame.finish_reason, "stop")}
            return {**head, "object": "chat.completion", "choices": [choice], "usage": _usage(frame),
                    "citations": _citations(frame)}
    raise Internal("The answer ended without an outcome; please retry.")


async def _sse(
    d: Deps, rid: str, head: dict[str, Any], frames: AsyncIterator[protocol.ServerFrame], include_usage: bool
) -> AsyncIterator[bytes]:
    def event(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return event({**head, "object": "chat.completion.chunk", "choices": [choice]})

    finished = False
    try:
        yield chunk({"role": "assistant", "content": ""}, None)
        async for frame in frames:
            if isinstance(frame, protocol.Delta):
                yield chunk({"content": frame.text}, None)
            elif isinstance(frame, protocol.Error):
                finished = True
                yield event(_error_body(frame))
            elif isinstance(frame, protocol.Done):
                finished = True
                last = chunk({}, FINISH.get(frame.finish_reason, "stop"))
                if frame.citations:  # the passages the answer cites as [n], on the last choice chunk
                    obj = json.loads(last[len(b"data: "):])
                    obj["citations"] = _citations(frame)
                    last = event(obj)
                yield last
                if include_usage:
                    yield event({**head, "object": "chat.completion.chunk", "choices": [],
                                 "usage": _usage(frame)})
        yield b"data: [DONE]\n\n"
    finally:
        if not finished:  # the client went away (the response was cancelled): stop generating for nobody
            d.cache.request_cancel(rid, d.settings.delta_ttl_s)  # one quick Redis write, no await here
