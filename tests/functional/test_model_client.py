"""The worker's model client against real model servers.

Contracts checked: LMI `/invocations` over HTTP, and SageMaker's InvokeEndpointWithResponseStream
through boto3's `sagemaker-runtime` client pointed (endpoint_url) at the local stand-in, which
encodes the documented event stream (PayloadPart cut at arbitrary offsets, ModelStreamError) and
operation errors (ValidationError, ModelError).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from lambdas.adapters.model import (
    ChunkParser,
    CircuitBreaker,
    HttpTransport,
    ModelChunk,
    ModelClient,
    SageMakerTransport,
    Transport,
    model_client_from_settings,
    sagemaker_runtime_client,
)
from lambdas.config import Settings
from lambdas.errors import BadRequest, ModelUnavailable
from sagemaker_containers.server import ThreadedServer
from sagemaker_containers.server.app import create_app
from sagemaker_containers.server.backends import load_backend

SYSTEM = """Answer from the context.

Context passages:
[1] Lighthouses
The Pharos of Alexandria was one of the Seven Wonders. It stood for over a thousand years.

[2] Café culture
Vienna's coffee houses are on the UNESCO list. Coffee in a Viennese café comes with a glass of water.
"""
QUESTION = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What comes with coffee in Vienna?"},
]
ANSWER = ("According to [2], Vienna's coffee houses are on the UNESCO list. "
          "Coffee in a Viennese café comes with a glass of water.")


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens here once the socket is closed


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    app = create_app(load_backend("extractive"), payload_split=5, endpoint_names={"chat"})
    with ThreadedServer(app) as running:
        yield running


@pytest.fixture(scope="module")
def other_region() -> Iterator[ThreadedServer]:
    with ThreadedServer(create_app(load_backend("extractive"), payload_split=11)) as running:
        yield running


@pytest.fixture(scope="module")
def failing() -> Iterator[ThreadedServer]:
    with ThreadedServer(create_app(load_backend("extractive", fail_after=4), payload_split=3)) as running:
        yield running


def http(url: str) -> HttpTransport:
    return HttpTransport(f"{url}/invocations", timeout_s=10)


def sagemaker(url: str, endpoint: str = "chat") -> SageMakerTransport:
    return SageMakerTransport(sagemaker_runtime_client("us-east-1", endpoint_url=url), endpoint, "chat-ic")


def read(client: ModelClient, **options: Any) -> tuple[str, list[ModelChunk]]:
    chunks = list(client.stream_chat(QUESTION, max_tokens=options.pop("max_tokens", 100), **options))
    return "".join(c.text for c in chunks), chunks


@pytest.mark.parametrize("make", [http, sagemaker], ids=["http", "sagemaker"])
def test_both_transports_stream_the_same_answer_with_finish_and_usage(
    server: ThreadedServer, make: Any
) -> None:
    text, chunks = read(ModelClient(make(server.url)))
    assert text == ANSWER
    last = chunks[-1]
    assert last.finish_reason == "stop" and last.usage is not None
    assert last.usage[1] == len(ANSWER.split())
    assert all(c.finish_reason is None for c in chunks[:-1])


def test_payload_parts_that_cut_through_lines_still_give_identical_chunks(server: ThreadedServer) -> None:
    raw_parts = list(sagemaker(server.url).stream({"messages": QUESTION, "max_tokens": 100, "stream": True}))
    assert max(len(p) for p in raw_parts) == 5
    assert any(b"\n" in p[:-1] for p in raw_parts)  # a part ends one line and begins the next
    via_http = read(ModelClient(http(server.url)))[1]
    via_sagemaker = read(ModelClient(sagemaker(server.url)))[1]
    assert via_http == via_sagemaker
    assert "café" in "".join(c.text for c in via_sagemaker)


def test_max_tokens_gives_finish_length(server: ThreadedServer) -> None:
    text, chunks = read(ModelClient(http(server.url)), max_tokens=3)
    assert text == "According to [2],"
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage[1] == 3


@pytest.mark.parametrize("make", [http, sagemaker], ids=["http", "sagemaker"])
def test_a_failure_mid_stream_raises_model_unavailable_without_restarting_elsewhere(
    failing: ThreadedServer, other_region: ThreadedServer, make: Any
) -> None:
    client = ModelClient(make(failing.url), make(other_region.url), CircuitBreaker(1, 60),
                         CircuitBreaker(1, 60))
    received: list[str] = []
    with pytest.raises(ModelUnavailable):
        for chunk in client.stream_chat(QUESTION, max_tokens=100):
            received.append(chunk.text)
    assert "".join(received) == "According to [2], Vienna's"  # no text repeated from another endpoint
    assert client.primary_breaker.state == "open"  # the failure counted against the primary


@pytest.mark.parametrize("make", [http, sagemaker], ids=["http", "sagemaker"])
def test_failover_when_the_primary_is_down_then_the_breaker_skips_it(
    other_region: ThreadedServer, make: Any
) -> None:
    primary_breaker = CircuitBreaker(failure_threshold=2, reset_s=60)
    down: Transport = make(closed_url())
    calls: list[dict[str, Any]] = []

    class Counting:
        """Counts the requests that reach the dead primary (its real transport does the work)."""

        def stream(self, body: dict[str, Any]) -> Iterator[bytes]:
            calls.append(body)
            return down.stream(body)

    client = ModelClient(Counting(), make(other_region.url), primary_breaker, CircuitBreaker(2, 60))
    for _ in range(3):
        assert read(client)[0] == ANSWER
    assert primary_breaker.state == "open"
    assert len(calls) == 2  # the third request went straight to the fallback


def test_with_both_endpoints_down_the_error_says_when_to_retry() -> None:
    client = ModelClient(http(closed_url()), http(closed_url()), CircuitBreaker(1, 30), CircuitBreaker(1, 30))
    with pytest.raises(ModelUnavailable):
        read(client)
    with pytest.raises(ModelUnavailable) as caught:
        read(client)
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 30


def test_a_refused_request_is_a_bad_request_and_does_not_fail_over(
    server: ThreadedServer, other_region: ThreadedServer
) -> None:
    for make in (http, sagemaker):
        breaker = CircuitBreaker(1, 60)
        client = ModelClient(make(server.url), make(other_region.url), breaker, CircuitBreaker(1, 60))
        with pytest.raises(BadRequest):
            read(client, adapter="not-loaded")
        assert breaker.state == "closed"
    with pytest.raises(BadRequest):  # SageMaker's own ValidationError: no such endpoint
        read(ModelClient(sagemaker(server.url, endpoint="missing")))


def test_a_reader_that_stops_early_does_not_count_as_a_failure(server: ThreadedServer) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_s=60)
    client = ModelClient(http(server.url), primary_breaker=breaker)
    for _ in range(3):
        stream = client.stream_chat(QUESTION, max_tokens=100)
        assert next(stream).text == "According"
        stream.close()
    assert breaker.state == "closed"
    assert read(client)[0] == ANSWER  # the pool was not left with half-read connections


def test_concurrent_streams_from_threads_share_one_client(server: ThreadedServer) -> None:
    for client in (ModelClient(http(server.url)), ModelClient(sagemaker(server.url))):
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda shared: read(shared)[0], [client] * 16))
        assert answers == [ANSWER] * 16


def test_settings_build_an_http_client_with_failover(other_region: ThreadedServer) -> None:
    settings = Settings(model_transport="http", model_endpoint=f"{closed_url()}/invocations",
                        model_fallback_endpoint=f"{other_region.url}/invocations",
                        circuit_failure_threshold=1)
    client = model_client_from_settings(settings)
    assert read(client)[0] == ANSWER
    assert client.primary_breaker.state == "open"


def test_settings_build_a_sagemaker_client_for_the_stand_in(server: ThreadedServer) -> None:
    settings = Settings(model_transport="sagemaker", model_endpoint="chat",
                        model_inference_component="chat-ic",
                        sagemaker_endpoint_url=server.url, model_fallback_endpoint="chat",
                        model_fallback_region="us-west-2")
    client = model_client_from_settings(settings)
    assert isinstance(client.fallback, SageMakerTransport)
    assert client.fallback.client.meta.region_name == "us-west-2"
    assert client.primary.client.meta.config.read_timeout >= 70  # type: ignore[attr-defined]
    assert read(client)[0] == ANSWER


def test_settings_without_an_endpoint_are_refused() -> None:
    with pytest.raises(ValueError, match="CHATSTACK_MODEL_ENDPOINT"):
        model_client_from_settings(Settings(model_endpoint=""))


def test_the_request_body_is_lmi_chat_completions(server: ThreadedServer) -> None:
    seen: list[dict[str, Any]] = []
    real = http(server.url)

    class Recording:
        def stream(self, body: dict[str, Any]) -> Iterator[bytes]:
            seen.append(json.loads(json.dumps(body)))
            return real.stream(body)

    list(ModelClient(Recording()).stream_chat(QUESTION, max_tokens=9, temperature=0.2, stop=["\n\n"]))
    assert seen == [{"messages": QUESTION, "max_tokens": 9, "temperature": 0.2, "stop": ["\n\n"],
                     "stream": True, "stream_options": {"include_usage": True}}]


def test_a_whole_answer_with_a_content_length_body_is_read_too(server: ThreadedServer) -> None:
    parser = ChunkParser()
    response = http(server.url).stream({"messages": QUESTION, "stream": False})
    chunks = [chunk for data in response for chunk in parser.feed(data)]
    chunks += parser.close()
    assert "".join(c.text for c in chunks) == ANSWER and chunks[-1].finish_reason == "stop"


def test_a_pooled_connection_the_server_closed_while_idle_is_retried_once_on_a_new_one() -> None:
    """The keep-alive race: the server closes an idle connection just as the pool hands it out for
    the next request (uvicorn's 5 s timeout did this to 1 chat in a few hundred under load). The
    request reached no model, so the client sends it again on a fresh connection. A real TCP server:
    the first connection answers one request and then closes without answering the second."""
    import threading

    answer = (b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'
              b"data: [DONE]\n\n")
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: "
                + str(len(answer)).encode() + b"\r\n\r\n" + answer)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    connections: list[int] = []

    def read_request(conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        while len(rest) < length:
            rest += conn.recv(65536)
        return True

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(1)
            with conn:
                if read_request(conn):
                    conn.sendall(response)
                if len(connections) == 1 and read_request(conn):
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    # closed with an RST and no answer: the server's idle timeout, as the client sees it

    threading.Thread(target=serve, daemon=True).start()
    try:
        transport = HttpTransport(f"http://127.0.0.1:{listener.getsockname()[1]}/invocations", 10)
        client = ModelClient(transport)
        for _ in range(2):
            chunks = list(client.stream_chat(QUESTION, max_tokens=8))
            assert "".join(c.text for c in chunks) == "hi"
        assert len(connections) == 2  # the second request went out again on a new connection
    finally:
        listener.close()


@pytest.fixture(scope="module")
def stalling() -> Iterator[ThreadedServer]:
    """A model that hangs after 3 tokens for a minute, its connection open (a hung GPU worker)."""
    backend = load_backend("extractive", stall_after=3, stall_s=60)
    with ThreadedServer(create_app(backend, payload_split=3, endpoint_names={"chat"})) as running:
        yield running


@pytest.mark.parametrize("transport", ["http", "sagemaker"])
def test_a_model_that_falls_silent_midway_fails_within_the_idle_timeout_not_the_first_token_one(
    stalling: ThreadedServer, transport: str
) -> None:
    """The first bytes may take `timeout_s` (70 s by default); after them, a silence longer than the
    idle timeout is a failure, counted against the endpoint, so the client is told within it."""
    if transport == "http":
        made: Transport = HttpTransport(f"{stalling.url}/invocations", timeout_s=30, idle_timeout_s=1)
    else:
        made = SageMakerTransport(sagemaker_runtime_client("us-east-1", endpoint_url=stalling.url,
                                                           timeout_s=30), "chat", "chat-ic", idle_timeout_s=1)
    client = ModelClient(made, primary_breaker=CircuitBreaker(1, 60))
    received: list[str] = []
    started = time.monotonic()
    with pytest.raises(ModelUnavailable):
        for chunk in client.stream_chat(QUESTION, max_tokens=100):
            received.append(chunk.text)
    waited = time.monotonic() - started
    assert "".join(received) == "According to [2],"  # what came before the silence
    assert waited < 20, waited  # the idle timeout (1 s), not the read timeout (30 s) or the stall (60 s)
    assert client.primary_breaker.state == "open"


def test_settings_give_both_transports_the_idle_timeout(server: ThreadedServer) -> None:
    for transport in ("http", "sagemaker"):
        settings = Settings(model_transport=transport, model_endpoint=f"{server.url}/invocations"
                            if transport == "http" else "chat", sagemaker_endpoint_url=server.url,
                            model_stream_idle_timeout_s=7)
        assert model_client_from_settings(settings).primary.idle_timeout_s == 7  # type: ignore[attr-defined]
