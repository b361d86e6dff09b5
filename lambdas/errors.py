"""The error hierarchy. Each error carries its protocol code and HTTP status; this module is the only
place that maps errors to codes and statuses."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

ErrorCode = Literal[
    "BAD_REQUEST",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "TOO_LARGE",
    "RATE_LIMITED",
    "QUOTA_EXCEEDED",
    "NOT_FOUND",
    "MODEL_UNAVAILABLE",
    "INTERNAL",
]


class ChatError(Exception):
    """Base of every error a client may see. `message` is one sentence, safe to show."""

    code: ClassVar[ErrorCode] = "INTERNAL"
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, retry_after: float | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.details = details


class BadRequest(ChatError):
    code = "BAD_REQUEST"
    status = 400


class Unauthorized(ChatError):
    code = "UNAUTHORIZED"
    status = 401


class Forbidden(ChatError):
    code = "FORBIDDEN"
    status = 403


class NotFound(ChatError):
    code = "NOT_FOUND"
    status = 404


class RequestGone(NotFound):
    """An accepted request whose message is no longer stored: its conversation was deleted."""

    def __init__(self) -> None:
        super().__init__(
            "This request is no longer stored: its conversation was deleted. Send the message again "
            "with a new requestId."
        )


class TooLarge(ChatError):
    code = "TOO_LARGE"
    status = 413


class RateLimited(ChatError):
    code = "RATE_LIMITED"
    status = 429


class QuotaExceeded(ChatError):
    code = "QUOTA_EXCEEDED"
    status = 429


class ModelUnavailable(ChatError):
    code = "MODEL_UNAVAILABLE"
    status = 503


class Internal(ChatError):
    code = "INTERNAL"
    status = 500


class Unavailable(Internal):
    """PostgreSQL or Redis is down (lambdas.adapters.failures): the same request succeeds shortly.
    `INTERNAL` with `retryAfter` on the WebSocket, like any internal failure; a 503 over HTTP."""

    status = 503

    def __init__(
        self, retry_after: float, message: str = "The service is briefly unavailable; retry shortly."
    ) -> None:
        super().__init__(message, retry_after=retry_after)


class AnswerTimeout(Internal):
    """The caller's request ran out of time while its answer goes on (a Lambda behind API Gateway's
    integration limit); the message says where the stored answer will be."""

    status = 504


def error_document(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """An HTTP error body, in OpenAI's shape (which the `openai` SDKs read: `message`, `type`,
    `param`, `code`), for every REST route alike: `code` is the protocol's code, `type` its lower
    case, `param` the request field at fault where one is."""
    return {"error": {"message": message, "type": code.lower(), "param": param, "code": code}}


BY_CODE: dict[str, type[ChatError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        TooLarge,
        RateLimited,
        QuotaExceeded,
        ModelUnavailable,
        Internal,
    )
}
