"""The local model server over real HTTP.

Contracts checked: LMI's chat-completions schema on `/invocations` (JSON lines of
`chat.completion.chunk`, usage-only last chunk, 400/424 error bodies, finish_reason "error" mid-stream);
the OpenAI SSE shape on `/v1/chat/completions`; and the SageMaker runtime API as botocore's
`sagemaker-runtime` client (service model 2017-05-13) parses it: the AWS event stream encoding of
PayloadPart / ModelStreamError / InternalStreamFailure, and the rest-json operation errors.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.eventstream import EventStream
from botocore.exceptions import ClientError, EventStreamError
from botocore.parsers import create_parser

from lambdas.adapters.model import sagemaker_runtime_client
from sagemaker_containers.server import ThreadedServer, serve_in_thread
from sagemaker_containers.server.app import create_app
from sagemaker_containers.server.backends import load_backend
from sagemaker_containers.server.backends.extractive import NOTHING_FOUND
from sagemaker_containers.server.eventstream import exception_event, payload_part

SYSTEM = """You are a helpful assistant.

Context passages:
[1] Eiffel Tower
The Eiffel Tower is a wrought-iron tower in Paris. It was completed in 1889 for the World's Fair.

[2] Mount Fuji
Mount Fuji is the highest mountain in Japan. It last erupted in 1707.
"""


def messages(question: str, *history: dict[str, str]) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, *history, {"role": "user", "content": question}]


def body(question: str, **extra: Any) -> dict[str, Any]:
    return {"messages": messages(question), "max_tokens": 200, "stream": True, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(create_app(load_backend("extractive", adapters={"legal": "unused"}),
                                   payload_split=7, endpoint_names=None)) as running:
        yield running


@pytest.fixture(scope="module")
def failing() -> Iterator[ThreadedServer]:
    with ThreadedServer(create_app(load_backend("extractive", fail_after=3), payload_split=5)) as running:
        yield running


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def content(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"]]


def invoke(url: str, payload: dict[str, Any] | bytes, **headers: str) -> httpx.Response:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return httpx.post(f"{url}/invocations", content=data, headers=headers, timeout=30)


def test_ping_is_200_when_the_backend_is_ready(server: ThreadedServer) -> None:
    assert httpx.get(f"{server.url}/ping").status_code == 200


def test_ping_is_503_when_the_backend_is_not_ready() -> None:
    backend = load_backend("openai", upstream=f"http://127.0.0.1:{free_port()}")
    with ThreadedServer(create_app(backend)) as running:
        assert httpx.get(f"{running.url}/ping").status_code == 503


def test_streamed_invocation_is_jsonlines_of_chunks_then_a_usage_only_chunk(server: ThreadedServer) -> None:
    response = invoke(server.url, body("When was the Eiffel Tower completed?"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/jsonlines")
    chunks = lines(response)
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk" and chunk["id"].startswith("chatcmpl-")
    *answer, last_content, usage = chunks
    assert all(c["choices"][0]["finish_reason"] is None for c in answer)
    assert all(c["choices"][0]["delta"]["role"] == "assistant" for c in answer)
    assert last_content["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == []
    tokens = usage["usage"]
    assert tokens["completion_tokens"] == len(answer) + 1
    assert tokens["total_tokens"] == tokens["prompt_tokens"] + tokens["completion_tokens"] > 0
    text = "".join(content(chunks))
    assert text.startswith("According to [1], ") and "1889" in text


def test_non_streamed_invocation_is_one_chat_completion(server: ThreadedServer) -> None:
    response = invoke(server.url, body("What is the highest mountain in Japan?", stream=False))
    whole = response.json()
    assert whole["object"] == "chat.completion"
    assert whole["choices"][0]["message"]["content"].startswith("According to [2], Mount Fuji")
    assert whole["choices"][0]["finish_reason"] == "stop"
    assert whole["usage"]["total_tokens"] > 0
    streamed = "".join(content(lines(invoke(server.url, body("What is the highest mountain in Japan?")))))
    assert whole["choices"][0]["message"]["content"] == streamed


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not valid JSON"),
        ({"inputs": "hello"}, "'messages'"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 9}, "temperature"),
    ],
)
def test_a_bad_body_is_a_400_with_a_reason(server: ThreadedServer, payload: Any, reason: str) -> None:
    response = invoke(server.url, payload)
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == 400 and reason in error["error"]


def test_an_unknown_adapter_is_refused_before_streaming_by_field_or_header(server: ThreadedServer) -> None:
    assert invoke(server.url, body("Paris?", adapters="legal")).status_code == 200
    refused = invoke(server.url, body("Paris?", adapters="nope"))
    assert refused.status_code == 400 and "nope" in refused.json()["error"]
    by_header = invoke(server.url, body("Paris?"), **{"X-Amzn-SageMaker-Adapter-Identifier": "nope"})
    assert by_header.status_code == 400


def test_a_backend_that_fails_before_streaming_answers_424() -> None:
    backend = load_backend("openai", upstream=f"http://127.0.0.1:{free_port()}", model="m")
    with ThreadedServer(create_app(backend)) as running:
        response = invoke(running.url, body("Paris?"))
    assert response.status_code == 424
    assert response.json()["code"] == 424


def test_a_failure_mid_stream_ends_with_a_finish_reason_error_line(failing: ThreadedServer) -> None:
    chunks = lines(invoke(failing.url, body("When was the Eiffel Tower completed?")))
    assert len(content(chunks)) == 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "error"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_the_extractive_answer_is_deterministic_and_cites_the_passage(server: ThreadedServer) -> None:
    first = content(lines(invoke(server.url, body("Tell me when Mount Fuji erupted", seed=1, temperature=1))))
    second = content(lines(invoke(server.url, body("Tell me when Mount Fuji erupted", seed=2))))
    assert first == second
    assert "".join(first) == (
        "According to [2], Mount Fuji is the highest mountain in Japan. It last erupted in 1707.")


def test_earlier_turns_are_quoted_and_nothing_relevant_says_so(server: ThreadedServer) -> None:
    history = [{"role": "user", "content": "My cat is called Miso."},
               {"role": "assistant", "content": "Noted."}]
    recalled = invoke(server.url, {"messages": messages("What is my cat called?", *history), "stream": True})
    assert "".join(content(lines(recalled))) == "Earlier you said: My cat is called Miso."
    nothing = "".join(content(lines(invoke(server.url, body("How do submarines dive?")))))
    assert nothing == f"{NOTHING_FOUND} You asked: How do submarines dive?"


def test_a_passage_with_paragraphs_and_wrapped_lines_is_quoted_whole(server: ThreadedServer) -> None:
    system = ("Context passages:\n[1] Handbook\nVacation requests go to your manager.\n\n"
              "Expense reports are due\nwithin thirty days of travel.\n\n[2] Other\nNothing here.")
    payload = {"messages": [{"role": "system", "content": system},
                            {"role": "user", "content": "When are expense reports due?"}], "stream": True}
    answer = "".join(content(lines(invoke(server.url, payload))))
    assert answer == "According to [1], Expense reports are due within thirty days of travel."


def test_max_tokens_cuts_the_answer_with_finish_length(server: ThreadedServer) -> None:
    chunks = lines(invoke(server.url, body("When was the Eiffel Tower completed?", max_tokens=5)))
    assert content(chunks) == ["According", " to", " [1],", " the", " Eiffel"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 5


def test_a_stop_sequence_ends_the_answer_before_it(server: ThreadedServer) -> None:
    chunks = lines(invoke(server.url, body("When was the Eiffel Tower completed?", stop=["Paris"])))
    assert "".join(content(chunks)) == "According to [1], the Eiffel Tower is a wrought-iron tower in"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_paced_streams_interleave_instead_of_queueing() -> None:
    with ThreadedServer(create_app(load_backend("extractive", token_rate=40))) as running:
        arrivals: dict[str, list[float]] = {"a": [], "b": []}

        async def read(name: str, client: httpx.AsyncClient) -> None:
            payload = body("When was the Eiffel Tower completed?", max_tokens=12)
            async with client.stream("POST", f"{running.url}/invocations", json=payload) as response:
                async for line in response.aiter_lines():
                    if line:
                        arrivals[name].append(time.monotonic())

        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(read("a", client), read("b", client))
    # Each stream takes about 12/40 s; B's first token came while A was still streaming.
    assert arrivals["b"][0] < arrivals["a"][-1] and arrivals["a"][0] < arrivals["b"][-1]


def test_openai_route_streams_sse_and_usage_only_when_asked(server: ThreadedServer) -> None:
    plain = httpx.post(f"{server.url}/v1/chat/completions", json=body("Paris?"), timeout=30)
    assert plain.headers["content-type"].startswith("text/event-stream")
    data = [line[len("data: "):] for line in plain.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]" and all(json.loads(d)["choices"] for d in data[:-1])
    with_usage = httpx.post(f"{server.url}/v1/chat/completions", timeout=30,
                            json=body("Paris?", stream_options={"include_usage": True}))
    last = json.loads([line for line in with_usage.text.splitlines() if line.startswith("data: {")][-1][6:])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0
    assert httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"] == "extractive"


def test_openai_pass_through_relays_another_servers_answer(server: ThreadedServer) -> None:
    backend = load_backend("openai", upstream=server.url)
    with ThreadedServer(create_app(backend)) as relay:
        assert httpx.get(f"{relay.url}/ping").status_code == 200
        for question in ("When was the Eiffel Tower completed?", "How do submarines dive?"):
            direct = lines(invoke(server.url, body(question)))
            relayed = lines(invoke(relay.url, body(question)))
            assert "".join(content(relayed)) == "".join(content(direct))
            assert relayed[-1]["usage"] == direct[-1]["usage"]
        cut = lines(invoke(relay.url, body("When was the Eiffel Tower completed?", max_tokens=4)))
        assert cut[-2]["choices"][0]["finish_reason"] == "length"


def test_openai_pass_through_turns_an_upstream_failure_mid_stream_into_an_error_line(
    failing: ThreadedServer,
) -> None:
    with ThreadedServer(create_app(load_backend("openai", upstream=failing.url))) as relay:
        chunks = lines(invoke(relay.url, body("When was the Eiffel Tower completed?")))
    assert "".join(content(chunks)) == "According to [1],"
    assert chunks[-1]["choices"][0]["finish_reason"] == "error"


def runtime(url: str, attempts: int = 2) -> Any:
    client = sagemaker_runtime_client("us-east-1", endpoint_url=url)
    if attempts == 1:
        client.meta.config.retries["total_max_attempts"] = 1
    return client


def test_boto3_streams_payload_parts_that_straddle_lines(server: ThreadedServer) -> None:
    response = runtime(server.url).invoke_endpoint_with_response_stream(
        EndpointName="chat", Body=json.dumps(body("When was the Eiffel Tower completed?")),
        ContentType="application/json", InferenceComponentName="chat-ic")
    assert response["ContentType"] == "application/jsonlines"
    parts = [event["PayloadPart"]["Bytes"] for event in response["Body"]]
    assert max(len(p) for p in parts) == 7
    assert any(not p.endswith(b"\n") and b"\n" in p for p in parts)  # a line ends mid-part
    streamed = b"".join(parts).decode("utf-8").splitlines()
    chunks = [json.loads(line) for line in streamed]
    direct = lines(invoke(server.url, body("When was the Eiffel Tower completed?")))
    assert content(chunks) == content(direct) and chunks[-1]["usage"] == direct[-1]["usage"]


def test_boto3_sees_a_backend_failure_mid_stream_as_model_stream_error(failing: ThreadedServer) -> None:
    response = runtime(failing.url).invoke_endpoint_with_response_stream(
        EndpointName="chat", Body=json.dumps(body("When was the Eiffel Tower completed?")))
    received = b""
    with pytest.raises(EventStreamError) as caught:
        for event in response["Body"]:
            received += event["PayloadPart"]["Bytes"]
    assert caught.value.response["Error"]["Code"] == "ModelStreamError"
    assert len(received.splitlines()) == 3  # the tokens before the failure arrived


class RawBody:
    """The raw HTTP body botocore's EventStream reads, delivered in 3-byte reads."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self) -> Iterator[bytes]:
        yield from (self.data[i:i + 3] for i in range(0, len(self.data), 3))

    def close(self) -> None:
        return None


def test_stream_exception_events_parse_in_botocore_as_event_stream_errors() -> None:
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    operation = model.operation_model("InvokeEndpointWithResponseStream")
    for name in ("ModelStreamError", "InternalStreamFailure"):
        raw = RawBody(payload_part(b'{"a": 1}\n') + exception_event(name, "it broke", "StreamBroken"))
        parser = create_parser("rest-json")._event_stream_parser  # what the client uses for event streams
        events = iter(EventStream(raw, operation.output_shape.members["Body"], parser, operation.name))
        assert next(events) == {"PayloadPart": {"Bytes": b'{"a": 1}\n'}}
        with pytest.raises(EventStreamError) as caught:
            next(events)
        assert caught.value.response["Error"] == {"Code": name, "Message": "it broke"}


def test_boto3_invoke_endpoint_returns_the_whole_answer(server: ThreadedServer) -> None:
    response = runtime(server.url).invoke_endpoint(
        EndpointName="chat", Body=json.dumps(body("Paris?", stream=False)), ContentType="application/json")
    whole = json.loads(response["Body"].read())
    assert whole["object"] == "chat.completion" and "[1]" in whole["choices"][0]["message"]["content"]


def test_boto3_gets_the_documented_errors_before_the_stream() -> None:
    app = create_app(load_backend("extractive"), endpoint_names={"chat"})
    with ThreadedServer(app) as running:
        client = runtime(running.url, attempts=1)
        with pytest.raises(ClientError) as unknown:
            client.invoke_endpoint_with_response_stream(EndpointName="other", Body=json.dumps(body("Paris?")))
        assert unknown.value.response["Error"]["Code"] == "ValidationError"
        with pytest.raises(ClientError) as bad:
            client.invoke_endpoint_with_response_stream(EndpointName="chat", Body=b'{"messages": []}')
        assert bad.value.response["Error"]["Code"] == "ModelError"
        assert bad.value.response["OriginalStatusCode"] == 400
    not_ready = load_backend("openai", upstream=f"http://127.0.0.1:{free_port()}")
    with ThreadedServer(create_app(not_ready)) as running:
        with pytest.raises(ClientError) as unavailable:
            runtime(running.url, attempts=1).invoke_endpoint_with_response_stream(
                EndpointName="chat", Body=json.dumps(body("Paris?")))
        assert unavailable.value.response["Error"]["Code"] == "ServiceUnavailable"


def test_the_module_entry_point_prints_its_real_port_and_serves() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sagemaker_containers.server", "--port", "0", "--token-rate", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("model server ready on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert not url.endswith(":0")
        assert httpx.get(f"{url}/ping").status_code == 200
        assert "[1]" in "".join(content(lines(invoke(url, body("Paris?")))))
    finally:
        process.terminate()
        process.wait(10)


def test_the_entry_point_refuses_missing_options_with_one_sentence() -> None:
    done = subprocess.run([sys.executable, "-m", "sagemaker_containers.server", "--backend", "openai"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip() == "--backend openai needs --upstream URL."


def test_serve_in_thread_serves_until_stopped() -> None:
    running = serve_in_thread(create_app(load_backend("extractive")))
    assert httpx.get(f"{running.url}/ping").status_code == 200
    running.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{running.url}/ping")
