"""The worker's model client: stream a chat completion from an LMI endpoint, with failover.

Synchronous on purpose: the worker runs each job of an SQS batch in its own thread.

- `ChunkParser` turns the container's byte stream (JSON lines or SSE `data:` lines, cut at arbitrary
  byte boundaries, even inside a UTF-8 character) into `ModelChunk`s.
- A transport yields the raw bytes: `SageMakerTransport` (InvokeEndpointWithResponseStream, the
  cloud and the local stand-in) or `HttpTransport` (a container's `/invocations`, no AWS in between).
- `ModelClient` fails over to the other region's endpoint when the primary's circuit is open or the
  primary fails before its first chunk. Once text has been handed out it never restarts elsewhere:
  the answer would repeat, so a failure mid-answer raises ModelUnavailable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import boto3
import urllib3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.httpsession import get_cert_path
from redis.exceptions import RedisError

from lambdas.adapters.cache import Cache
from lambdas.adapters.http1 import NoAnswer, Origin
from lambdas.config import INTERNAL_SECRET_HEADER, Settings
from lambdas.errors import BadRequest, ModelUnavailable

log = logging.getLogger(__name__)

JSONLINES = "application/jsonlines"
# Errors SageMaker answers before the stream that say "this endpoint cannot serve now".
_UNAVAILABLE_CODES = frozenset({"ModelError", "ServiceUnavailable", "ThrottlingException", "InternalFailure",
                                "ModelNotReadyException", "InternalDependencyException"})


@dataclass(frozen=True)
class ModelChunk:
    """A piece of the answer. The last chunk has `finish_reason` and, when the model reported it,
    `usage` = (prompt_tokens, completion_tokens)."""

    text: str
    finish_reason: str | None = None
    usage: tuple[int, int] | None = None


class ChunkParser:
    """Incremental parser of a model stream: `feed` bytes as they arrive, then `close`.

    Accepts bare JSON lines (LMI async mode) and SSE `data:` lines, the `chat.completion.chunk`
    shape and LMI's TGI-style `{"token": {"text"}, "generated_text", "details": {"finish_reason"}}`
    shape, with null fields anywhere. Skips blank lines, `[DONE]` and usage-only chunks, whose usage
    rides on the finishing chunk: that chunk is held back until the usage arrives or the stream ends.
    A `finish_reason` of "error", an error object or an unreadable line raises ModelUnavailable, and
    so does a stream that ends without a finish reason (a broken stream must not pass for an answer).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._held: ModelChunk | None = None
        self.usage: tuple[int, int] | None = None
        self.finish_reason: str | None = None

    def feed(self, data: bytes) -> list[ModelChunk]:
        self._buffer += data
        out: list[ModelChunk] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            out.extend(self._line(line))
        return out

    def close(self) -> list[ModelChunk]:
        out = self._line(bytes(self._buffer)) if self._buffer.strip() else []
        self._buffer.clear()
        if self._held is not None:
            out.append(replace(self._held, usage=self.usage))
            self._held = None
        if self.finish_reason is None:
            raise ModelUnavailable("The model's answer ended before it was finished.")
        return out

    def _line(self, raw: bytes) -> list[ModelChunk]:
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ModelUnavailable("The model sent a line that is not UTF-8.") from None
        if text.startswith("data:"):
            text = text[len("data:"):].strip()
        elif text.startswith((":", "event:", "id:", "retry:")):
            return []  # SSE comments and fields other than data
        if not text or text == "[DONE]":
            return []
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            raise ModelUnavailable("The model sent an unreadable line.", line=text[:200]) from None
        objects = obj if isinstance(obj, list) else [obj]  # TGI-compat non-streamed answers are arrays
        out: list[ModelChunk] = []
        for item in objects:
            if not isinstance(item, dict):
                raise ModelUnavailable("The model sent a line that is not a JSON object.", line=text[:200])
            out.extend(self._object(item))
        return out

    def _object(self, obj: dict[str, Any]) -> list[ModelChunk]:
        if obj.get("error"):
            raise ModelUnavailable("The model failed while answering.", cause=str(obj["error"])[:500])
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = (_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")))
        if "choices" in obj:
            text, finish = _chat_choice(obj.get("choices"))
        elif {"token", "generated_text", "details"} & obj.keys():
            text, finish = self._tgi(obj)
        else:
            raise ModelUnavailable("The model sent a line of an unknown shape.", keys=sorted(obj)[:10])
        if finish == "error":
            raise ModelUnavailable("The model failed while answering.")
        out = [ModelChunk(text)] if text else []
        if finish:
            self.finish_reason = finish
            self._held = ModelChunk("", finish)
        elif self._held is not None and self.usage is not None:
            out.append(replace(self._held, usage=self.usage))
            self._held = None
        return out

    def _tgi(self, obj: dict[str, Any]) -> tuple[str, str | None]:
        token = obj.get("token") or {}
        details = obj.get("details") or {}
        if details.get("generated_tokens") is not None:
            prompt = details.get("input_length") or details.get("prompt_tokens")
            self.usage = (_int(prompt), _int(details.get("generated_tokens")))
        if token:
            text = "" if token.get("special") else _str(token.get("text"))
        else:  # a whole, non-streamed answer
            text = _str(obj.get("generated_text"))
        finish = details.get("finish_reason") or (None if token else "stop")
        return text, finish


def _chat_choice(choices: Any) -> tuple[str, str | None]:
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return "", None  # a usage-only chunk
    choice = choices[0]
    delta = choice.get("delta") or choice.get("message") or {}
    return _str(delta.get("content")), choice.get("finish_reason") or None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Transport(Protocol):
    def stream(self, body: dict[str, Any]) -> Iterator[bytes]:
        """The container's response bytes; raises ModelUnavailable or BadRequest."""
        ...


class SageMakerTransport:
    """InvokeEndpointWithResponseStream on one endpoint (and inference component, when given)."""

    def __init__(
        self,
        client: Any,
        endpoint_name: str,
        inference_component: str | None = None,
        idle_timeout_s: float | None = None,
    ) -> None:
        """`idle_timeout_s`: once the first part has come, how long each later read may wait (the
        client's read timeout bounds the first, which a model's first token may take long to send)."""
        self.client = client
        self.endpoint_name = endpoint_name
        self.inference_component = inference_component
        self.idle_timeout_s = idle_timeout_s

    def __repr__(self) -> str:
        return f"SageMakerTransport({self.endpoint_name!r})"

    def stream(self, body: dict[str, Any]) -> Iterator[bytes]:
        request: dict[str, Any] = {
            "EndpointName": self.endpoint_name,
            "Body": json.dumps(body).encode("utf-8"),
            "ContentType": "application/json",
            "Accept": JSONLINES,
        }
        if self.inference_component:
            request["InferenceComponentName"] = self.inference_component
        try:
            response = self.client.invoke_endpoint_with_response_stream(**request)
        except ClientError as exc:
            raise self._client_error(exc) from exc
        except BotoCoreError as exc:
            raise ModelUnavailable("The model endpoint cannot be reached.", endpoint=self.endpoint_name,
                                   cause=str(exc)) from exc
        events = response["Body"]
        idle = self.idle_timeout_s
        try:
            for event in events:
                part = event.get("PayloadPart")
                if part and part.get("Bytes"):
                    if idle is not None:
                        _read_timeout(events, idle)
                        idle = None
                    yield part["Bytes"]
        except ClientError as exc:  # EventStreamError: ModelStreamError, InternalStreamFailure
            raise self._client_error(exc) from exc
        except (BotoCoreError, urllib3.exceptions.HTTPError, OSError) as exc:
            raise ModelUnavailable("The model stream broke.", endpoint=self.endpoint_name,
                                   cause=str(exc)) from exc
        finally:
            events.close()

    def _client_error(self, exc: ClientError) -> BadRequest | ModelUnavailable:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        original = exc.response.get("OriginalStatusCode")
        # ValidationError is SageMaker refusing the call; a ModelError whose container answered 4xx
        # (not 429) is the model refusing the body. Neither is helped by another region.
        if code == "ValidationError" or (
            code == "ModelError" and isinstance(original, int) and 400 <= original < 500 and original != 429
        ):
            return BadRequest("The model endpoint rejected the request.", endpoint=self.endpoint_name,
                              cause=code, detail=message[:500])
        if code not in _UNAVAILABLE_CODES | {"ModelStreamError", "InternalStreamFailure"}:
            log.warning("unexpected sagemaker-runtime error %s: %s", code, message)
        return ModelUnavailable("The model is unavailable.", endpoint=self.endpoint_name, cause=code,
                                detail=message[:500])


def _read_timeout(events: Any, seconds: float) -> None:
    """Bound the later reads of a response event stream: the timeout of the socket under it (botocore's
    urllib3 response; urllib3 sets each request's own read timeout again, so a reused connection does
    not keep this one). Best effort: another HTTP stack under botocore keeps the client's timeout."""
    raw = getattr(events, "_raw_stream", None)
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


class HttpTransport:
    """POST to a container's `/invocations` URL directly, over kept connections
    (lambdas/adapters/http1.py: the chunked coding is decoded from one buffer filled by one socket
    read, where urllib3 made several reads and Python calls per chunk, that is per token)."""

    def __init__(
        self, url: str, timeout_s: float, secret: str = "", idle_timeout_s: float | None = None
    ) -> None:
        """`timeout_s` bounds the wait for the answer's first bytes, `idle_timeout_s` (default: the
        same) each gap after them: a model that stops midway is a failure within that gap."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"The model URL must be http(s), not {url!r}.")
        self.url = url
        self.idle_timeout_s = idle_timeout_s
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # The local model server answers only the run's processes (chatstack/local/internal_auth.py).
        self.headers = {"Content-Type": "application/json", "Accept": JSONLINES}
        if secret:
            self.headers[INTERNAL_SECRET_HEADER] = secret
        self.origin = Origin(url, connect_timeout_s=min(timeout_s, 5.0), read_timeout_s=timeout_s,
                             ca_certs=get_cert_path(True))

    def __repr__(self) -> str:
        return f"HttpTransport({self.url!r})"

    def stream(self, body: dict[str, Any]) -> Iterator[bytes]:
        # A kept connection the server closed while idle (uvicorn closes idle ones after 5 s) is
        # replaced, and a request it drops as it closes is sent once more on a new connection: that
        # request reached no model (under load, 1 chat in 300 met this before the retry). A timeout
        # is not retried: it would double a wait.
        try:
            exchange = self.origin.open("POST", self.path, json.dumps(body).encode("utf-8"), self.headers)
        except NoAnswer as exc:
            raise ModelUnavailable("The model server cannot be reached.", url=self.url,
                                   cause=str(exc)) from exc
        try:
            if exchange.status != 200:
                detail = exchange.read(4096).decode("utf-8", "replace")
                # 4xx is the model refusing this body (bad field, unknown adapter); 408/429 are transient.
                if 400 <= exchange.status < 500 and exchange.status not in (408, 429):
                    raise BadRequest("The model server rejected the request.", url=self.url, cause=detail)
                raise ModelUnavailable("The model server failed.", url=self.url, status=exchange.status,
                                       cause=detail)
            # The connection goes back for reuse once read whole.
            yield from exchange.pieces(idle_timeout_s=self.idle_timeout_s)
        except NoAnswer as exc:
            raise ModelUnavailable("The model stream broke.", url=self.url, cause=str(exc)) from exc
        finally:
            exchange.close()  # a half-read answer's connection is mid-body: never reused


State = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures; after `reset_s` it is half-open and lets
    up to `probes` calls through per `reset_s`: the first success (the first streamed chunk) closes
    it, a failure opens it again. In-process and thread-safe; `SharedCircuitBreaker` keeps the same
    state in Redis for every worker process."""

    def __init__(self, failure_threshold: int = 3, reset_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, probes: int = 1) -> None:
        if failure_threshold < 1 or reset_s <= 0 or probes < 1:
            raise ValueError("failure_threshold and probes must be >= 1 and reset_s > 0")
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self.probes = probes
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._window_at: float | None = None
        self._window_probes = 0

    def _state(self, now: float) -> State:
        if self._opened_at is None:
            return "closed"
        return "half-open" if now - self._opened_at >= self.reset_s else "open"

    @property
    def state(self) -> State:
        with self._lock:
            return self._state(self._clock())

    def allow(self) -> bool:
        """Whether a call may go through now (in half-open, `probes` per `reset_s` window; probes whose
        outcome never came back are replaced in the next window)."""
        with self._lock:
            now = self._clock()
            state = self._state(now)
            if state == "closed":
                return True
            if state == "open":
                return False
            if self._window_at is None or now - self._window_at >= self.reset_s:
                self._window_at, self._window_probes = now, 0
            if self._window_probes < self.probes:
                self._window_probes += 1
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = self._window_at = None

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._opened_at is not None or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
                self._window_at = None

    def retry_after(self) -> float:
        """Seconds until the next probe may go through (0 when closed)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self.reset_s - self._clock())


class SharedCircuitBreaker(CircuitBreaker):
    """The same breaker with its state in Redis, keyed by endpoint, so every worker process (every
    Lambda container, every local host) sees one state: a breaker opened by one closes for all on
    the first chunk any of them streams. When Redis is unreachable it falls back to its own
    in-process state (the parent class)."""

    def __init__(self, cache: Cache, endpoint: str, failure_threshold: int = 3, reset_s: float = 30.0,
                 probes: int = 3, clock: Callable[[], float] = time.time) -> None:
        super().__init__(failure_threshold, reset_s, clock, probes)
        self.cache = cache
        self.endpoint = endpoint
        self.ttl_s = int(max(300.0, reset_s * 10))
        # Per thread (one call at a time each): whether Redis held no state when this thread's call
        # was let through. Its success then has nothing to reset, and skips the write: one round trip
        # less per answer. A failure another worker records meanwhile is reset by the next success
        # whose call began after it, within about one answer's time, instead of by this one.
        self._call = threading.local()

    def _opened(self) -> float | None:
        opened = self.cache.breaker_state(self.endpoint).get("opened")
        return float(opened) if opened else None

    @property
    def state(self) -> State:
        try:
            opened = self._opened()
        except RedisError:
            return super().state
        if opened is None:
            return "closed"
        return "half-open" if self._clock() - opened >= self.reset_s else "open"

    def allow(self) -> bool:
        self._call.clean = False
        try:
            state = self.cache.breaker_state(self.endpoint)
            self._call.clean = not state
            opened = float(state["opened"]) if state.get("opened") else None
            now = self._clock()
            if opened is None:
                return True
            if now - opened < self.reset_s:
                return False
            return self.cache.breaker_probe(self.endpoint, now=now, reset_s=self.reset_s, probes=self.probes)
        except RedisError:
            return super().allow()

    def record_success(self) -> None:
        super().record_success()
        if getattr(self._call, "clean", False):
            self._call.clean = False
            return
        with contextlib.suppress(RedisError):
            self.cache.breaker_success(self.endpoint)

    def record_failure(self) -> None:
        super().record_failure()
        with contextlib.suppress(RedisError):
            self.cache.breaker_failure(
                self.endpoint, threshold=self.failure_threshold, now=self._clock(), ttl_s=self.ttl_s
            )

    def retry_after(self) -> float:
        try:
            opened = self._opened()
        except RedisError:
            return super().retry_after()
        return 0.0 if opened is None else max(0.0, opened + self.reset_s - self._clock())


class ModelClient:
    """Streams chat completions from the primary endpoint, failing over to the fallback."""

    def __init__(
        self,
        primary: Transport,
        fallback: Transport | None = None,
        primary_breaker: CircuitBreaker | None = None,
        fallback_breaker: CircuitBreaker | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.primary_breaker = primary_breaker or CircuitBreaker()
        self.fallback_breaker = fallback_breaker or CircuitBreaker()

    def stream_chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float | None = None,
        top_p: float | None = None,
        adapter: str | None = None,
        stop: list[str] | None = None,
    ) -> Generator[ModelChunk, None, None]:
        """Chunks of the answer, the last with finish_reason (and usage when reported). Closing the
        generator early (a cancelled request) closes the model connection."""
        body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "stream": True,
                                "stream_options": {"include_usage": True}}
        optional = {"temperature": temperature, "top_p": top_p, "adapters": adapter, "stop": stop}
        body.update({key: value for key, value in optional.items() if value is not None})
        routes = [(self.primary, self.primary_breaker)]
        if self.fallback is not None:
            routes.append((self.fallback, self.fallback_breaker))
        failure: ModelUnavailable | None = None
        for transport, breaker in routes:
            if not breaker.allow():
                failure = failure or ModelUnavailable("The model is unavailable; try again shortly.",
                                                      retry_after=breaker.retry_after())
                continue
            started = False
            try:
                with closing(_chunks(transport, body)) as chunks:
                    for chunk in chunks:
                        if not started:  # the first chunk: the endpoint is serving again
                            started = True
                            breaker.record_success()
                        yield chunk
            except ModelUnavailable as exc:
                breaker.record_failure()
                if started:
                    raise
                log.warning("model %r failed before its first chunk: %s %s", transport, exc, exc.details)
                failure = exc
                continue
            except BadRequest:
                breaker.record_success()  # the endpoint answered: it is up
                raise
            except GeneratorExit:
                raise  # the caller stopped reading (cancel): says nothing about the endpoint
            if not started:
                breaker.record_success()  # an empty answer is still an answer
            return
        raise failure or ModelUnavailable("The model is unavailable.")


def _chunks(transport: Transport, body: dict[str, Any]) -> Generator[ModelChunk, None, None]:
    parser = ChunkParser()
    for data in transport.stream(body):
        yield from parser.feed(data)
    yield from parser.close()


def sagemaker_runtime_client(region: str, *, endpoint_url: str = "", timeout_s: float = 70.0) -> Any:
    """A sagemaker-runtime client for streaming: read timeout >= 70 s (the documented socket timeout
    for a 60 s model), at most one retry so that failover stays fast."""
    options: dict[str, Any] = {
        "read_timeout": max(70.0, timeout_s),
        "connect_timeout": 5,
        "retries": {"total_max_attempts": 2, "mode": "standard"},
        "max_pool_connections": 64,
        "tcp_keepalive": True,
    }
    session = boto3.session.Session()
    if endpoint_url and session.get_credentials() is None:
        options["signature_version"] = UNSIGNED  # a local stand-in with no AWS credentials around
    return session.client("sagemaker-runtime", region_name=region, endpoint_url=endpoint_url or None,
                          config=Config(**options))


def model_client_from_settings(settings: Settings, cache: Cache | None = None) -> ModelClient:
    """The client the settings describe. The fallback endpoint, when set, is the same deployment in
    `model_fallback_region` (same inference component name)."""
    if not settings.model_endpoint:
        raise ValueError("No model endpoint: set CHATSTACK_MODEL_ENDPOINT.")
    primary: Transport
    fallback: Transport | None = None
    if settings.model_transport == "http":
        secret = settings.internal_secret
        idle = settings.model_stream_idle_timeout_s
        primary = HttpTransport(settings.model_endpoint, settings.model_timeout_s, secret=secret,
                                idle_timeout_s=idle)
        if settings.model_fallback_endpoint:
            fallback = HttpTransport(settings.model_fallback_endpoint, settings.model_timeout_s,
                                     idle_timeout_s=idle)
    else:
        component = settings.model_inference_component or None
        client = sagemaker_runtime_client(settings.region, endpoint_url=settings.sagemaker_endpoint_url,
                                          timeout_s=settings.model_timeout_s)
        idle = settings.model_stream_idle_timeout_s
        primary = SageMakerTransport(client, settings.model_endpoint, component, idle)
        if settings.model_fallback_endpoint:
            region = settings.model_fallback_region or settings.region
            other = client if region == settings.region else sagemaker_runtime_client(
                region, endpoint_url=settings.sagemaker_endpoint_url, timeout_s=settings.model_timeout_s)
            fallback = SageMakerTransport(other, settings.model_fallback_endpoint, component, idle)

    def breaker(transport: Transport | None) -> CircuitBreaker:
        threshold, reset_s = settings.circuit_failure_threshold, settings.circuit_reset_s
        if cache is None or transport is None:
            return CircuitBreaker(threshold, reset_s, probes=settings.circuit_half_open_probes)
        return SharedCircuitBreaker(cache, repr(transport), threshold, reset_s,
                                    probes=settings.circuit_half_open_probes)

    return ModelClient(primary, fallback, breaker(primary), breaker(fallback))
