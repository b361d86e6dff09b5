"""The llama.cpp backend behind the LMI contract: a tiny random Llama written as GGUF here (no
download) is loaded by llama-cpp-python and streamed through `/invocations` (LMI's chat-completions
schema: JSON lines of `chat.completion.chunk`, the last content chunk with `finish_reason`, then a
usage chunk with empty `choices`) and read by the worker's own model client.

llama-cpp-python ships no wheels on PyPI: it compiles llama.cpp on install (about an hour on two busy
cores here), so it is the optional extra `llamacpp`, and these tests skip where it is not installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lambdas.adapters.model import model_client_from_settings
from lambdas.config import Settings
from sagemaker_containers.server import ThreadedServer, serve_in_thread
from sagemaker_containers.server.__main__ import backend_options, parse_args
from sagemaker_containers.server.app import create_app
from sagemaker_containers.server.backends import load_backend
from tests.helpers.tiny_gguf import create_tiny_gguf

MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is the optional extra `llamacpp`")
    model = create_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    backend = load_backend("llamacpp", model_file=str(model), n_ctx=256, threads=1)
    srv = serve_in_thread(create_app(backend))
    yield srv
    srv.stop()


def test_a_streamed_answer_follows_the_lmi_jsonlines_contract(server: ThreadedServer) -> None:
    body = {"messages": MESSAGES, "max_tokens": 12, "stream": True, "seed": 1}
    reply = httpx.post(server.url + "/invocations", json=body, timeout=120)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/jsonlines")
    chunks = [json.loads(line) for line in reply.text.splitlines() if line]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = [c for c in chunks if c["choices"]]
    assert content[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    usage = chunks[-1]["usage"]
    assert not chunks[-1]["choices"] and usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 12


def test_the_worker_model_client_reads_the_stream(server: ThreadedServer) -> None:
    client = model_client_from_settings(Settings(model_endpoint=server.url + "/invocations"))
    chunks = list(client.stream_chat(MESSAGES, max_tokens=8))
    assert chunks[-1].finish_reason in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage[1] > 0


def test_a_whole_answer_and_a_refused_adapter(server: ThreadedServer) -> None:
    whole = httpx.post(server.url + "/invocations", json={"messages": MESSAGES, "max_tokens": 5}, timeout=120)
    assert whole.status_code == 200 and whole.json()["object"] == "chat.completion"
    refused = httpx.post(server.url + "/invocations",
                         json={"messages": MESSAGES, "max_tokens": 5, "adapters": "acme"}, timeout=30)
    assert refused.status_code == 400 and "adapter" in refused.json()["error"]


def test_the_server_command_needs_a_gguf_file() -> None:
    with pytest.raises(SystemExit, match="--model-file"):
        backend_options(parse_args(["--backend", "llamacpp"]))


def test_a_file_that_is_not_gguf_is_refused_in_one_sentence(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is the optional extra `llamacpp`")
    from sagemaker_containers.server.backends import BackendError

    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="cannot load"):
        load_backend("llamacpp", model_file=str(bogus))
