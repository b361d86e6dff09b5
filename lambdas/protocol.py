"""Wire protocol v1: every frame as a Pydantic model.

Client frames are routed on `action`; server frames carry `type`. Parsing never raises anything but
`BadRequest` / `TooLarge`, so a handler can turn any bad frame into one `error` frame.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from lambdas.errors import BadRequest, ChatError, ErrorCode, TooLarge
from lambdas.validation import MAX_JSON_DEPTH, first_control, json_too_deep

PROTOCOL_VERSION = 1
MAX_TEXT_CHARS = 32_000  # a user turn; the gateway's 128 KB message limit comes first for most clients
MAX_ID_CHARS = 64
SNIPPET_CHARS = 280


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


MAX_STOPS = 4
MAX_STOP_CHARS = 100


class ChatOptions(_Frame):
    """Per-message generation options. All optional; the server applies its defaults. Strict: "5" is
    not a number of tokens nor "yes" a boolean (a client that sends them has a bug to hear about)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, strict=True)

    max_tokens: int | None = Field(default=None, alias="maxTokens", ge=1, le=8192)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, alias="topP", gt=0.0, le=1.0)
    rag: bool = True
    model: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    # Up to 4 sequences at which the answer ends (not included), as OpenAI's and vLLM's `stop`.
    stop: list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]] | None = Field(
        default=None, max_length=MAX_STOPS
    )


# ---- client -> server ----------------------------------------------------------------------------


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _canonical_uuid(value: Any) -> Any:
    """A requestId as the server's frames will carry it: lowercase, hyphenated. Another spelling of the
    same UUID (uppercase, braces, no hyphens) is refused rather than echoed back changed, which a
    client matching frames by its own string would never recognise."""
    if isinstance(value, str) and not _UUID.fullmatch(value):
        raise ValueError("must be a UUID in lowercase with hyphens (8-4-4-4-12 hex digits)")
    return value


RequestId = Annotated[UUID, BeforeValidator(_canonical_uuid)]


# Characters that show nothing: separators and format characters (zero-width space and joiners, the
# word joiner, the byte-order mark, bidi controls).
_INVISIBLE = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})


def _has_text(value: str) -> str:
    if not any(not ch.isspace() and unicodedata.category(ch) not in _INVISIBLE for ch in value):
        raise ValueError("must contain visible text")
    return value


class SendMessage(_Frame):
    action: Literal["sendMessage"]
    request_id: RequestId = Field(alias="requestId")
    conversation_id: UUID | None = Field(default=None, alias="conversationId")
    text: Annotated[str, AfterValidator(_has_text)] = Field(min_length=1)
    options: ChatOptions = ChatOptions()


class Resume(_Frame):
    action: Literal["resume"]
    request_id: RequestId = Field(alias="requestId")
    after_seq: int = Field(default=0, alias="afterSeq", ge=0, strict=True)


class Cancel(_Frame):
    action: Literal["cancel"]
    request_id: RequestId = Field(alias="requestId")


class Ping(_Frame):
    action: Literal["ping"]


ClientFrame = Annotated[SendMessage | Resume | Cancel | Ping, Field(discriminator="action")]
_client_frame: TypeAdapter[SendMessage | Resume | Cancel | Ping] = TypeAdapter(ClientFrame)


# ---- server -> client ----------------------------------------------------------------------------


class Ack(_Frame):
    type: Literal["ack"] = "ack"
    request_id: str = Field(alias="requestId")
    conversation_id: str = Field(alias="conversationId")
    message_id: str = Field(alias="messageId")


class Delta(_Frame):
    type: Literal["delta"] = "delta"
    request_id: str = Field(alias="requestId")
    seq: int = Field(ge=1)
    text: str
    # Set on the first delta of a generation that took over from a failed worker and whose text
    # differs from what was already streamed: drop the text received so far, this delta starts anew.
    restart: bool | None = None


class Usage(_Frame):
    input_tokens: int = Field(alias="inputTokens", ge=0)
    output_tokens: int = Field(alias="outputTokens", ge=0)


class Citation(_Frame):
    index: int
    document_id: str = Field(alias="documentId")
    title: str
    chunk: int
    score: float
    source: str | None = None
    # The start of the cited passage, for a preview on hover (at most SNIPPET_CHARS characters).
    snippet: str | None = None


class Done(_Frame):
    type: Literal["done"] = "done"
    request_id: str = Field(alias="requestId")
    message_id: str = Field(alias="messageId")
    finish_reason: str = Field(alias="finishReason")
    usage: Usage
    citations: list[Citation] = []
    # The whole answer, sent when the deltas are no longer kept (a repeat or resume of a finished
    # request after its stream expired): the client shows this text instead of what it pieced together.
    text: str | None = None


class Error(_Frame):
    type: Literal["error"] = "error"
    request_id: str | None = Field(default=None, alias="requestId")
    code: ErrorCode
    message: str
    retry_after: float | None = Field(default=None, alias="retryAfter")


class Pong(_Frame):
    type: Literal["pong"] = "pong"


ServerFrame = Ack | Delta | Done | Error | Pong


def dump(frame: BaseModel) -> str:
    """Serialize a frame with its wire (camelCase) names, leaving out unset optionals."""
    return frame.model_dump_json(by_alias=True, exclude_none=True)


def error_frame(exc: ChatError, request_id: str | UUID | None = None) -> Error:
    return Error(
        requestId=str(request_id) if request_id is not None else None,
        code=exc.code,
        message=exc.message,
        retryAfter=exc.retry_after,
    )


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def peek_request_id(body: str | None) -> str | None:
    """The requestId of a frame that failed validation, so the error frame can name it."""
    if json_too_deep(body or ""):
        return None
    try:
        value = json.loads(body or "")
    except ValueError:
        return None
    if isinstance(value, dict):
        rid = value.get("requestId")
        if isinstance(rid, str) and len(rid) <= MAX_ID_CHARS:
            return rid
    return None


def parse_client_frame(body: str | None) -> SendMessage | Resume | Cancel | Ping:
    """Parse one client frame, raising BadRequest (or TooLarge) with one clear sentence."""
    if body is None or body == "":
        raise BadRequest("The frame is empty; send a JSON object with an 'action'.")
    if json_too_deep(body):  # before parsing: deep nesting would exhaust the parser's recursion
        raise BadRequest(f"The frame nests JSON deeper than {MAX_JSON_DEPTH} levels.")
    try:
        value: Any = json.loads(body)
    except ValueError:
        raise BadRequest("The frame is not valid JSON.") from None
    if not isinstance(value, dict):
        raise BadRequest("The frame must be a JSON object with an 'action'.")
    action = value.get("action")
    if action not in ("sendMessage", "resume", "cancel", "ping"):
        raise BadRequest(
            f"Unknown action {str(action)[:40]!r}; expected sendMessage, resume, cancel or ping."
        )
    if action == "sendMessage":
        check_text_size(value.get("text"))
    where = first_control(value)
    if where:
        raise BadRequest(f"Invalid {action} frame: {where}: control characters such as NUL are not allowed.")
    try:
        return _client_frame.validate_python(value)
    except ValidationError as exc:
        raise BadRequest(f"Invalid {action} frame: {_describe(exc)}.") from None


def check_text_size(text: Any) -> None:
    """TOO_LARGE for a user turn over MAX_TEXT_CHARS; checked before validation so that the error is
    TOO_LARGE rather than BAD_REQUEST."""
    if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
        raise TooLarge(f"The message text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}.")


def send_message(value: dict[str, Any]) -> SendMessage:
    """A sendMessage that came by another door (the OpenAI-compatible route), held to the same limits
    as a frame and refused with the same one-sentence errors."""
    check_text_size(value.get("text"))
    try:
        return SendMessage.model_validate(value)
    except ValidationError as exc:
        raise BadRequest(f"Invalid message: {_describe(exc)}.") from None


def parse_server_frame(data: str | bytes) -> ServerFrame:
    """Parse a server frame (clients and tests)."""
    return _server_frame.validate_json(data)


_server_frame: TypeAdapter[ServerFrame] = TypeAdapter(
    Annotated[Ack | Delta | Done | Error | Pong, Field(discriminator="type")]
)
