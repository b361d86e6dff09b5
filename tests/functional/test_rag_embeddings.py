"""Embedders: the local MiniLM model, and the SageMaker client through boto3 against a local stand-in.

The stand-in honours the SageMaker runtime InvokeEndpoint contract (POST
/endpoints/{EndpointName}/invocations, body passed through, 200 with the container's body) and
the Text Embeddings Inference `/embed` contract behind it (`{"inputs": [...]}` in, one float array
per input out), computing real vectors with the local model.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from lambdas.rag.embeddings import DIMENSION, EmbeddingError, LocalEmbedder, SageMakerEmbedder
from tests.functional.conftest_rag import *  # noqa: F403  (the fixtures)


class StandIn:
    def __init__(self, model: LocalEmbedder) -> None:
        self.model = model
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answer_override: Any = None


@pytest.fixture
def sagemaker_stand_in(
    embedder: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, StandIn]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    state = StandIn(embedder)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.calls.append((self.path, body))
            parts = self.path.strip("/").split("/")
            if len(parts) != 3 or parts[0] != "endpoints" or parts[2] != "invocations":
                self.send_response(404)
                self.end_headers()
                return
            answer = (
                state.answer_override
                if state.answer_override is not None
                else state.model.embed(body["inputs"])
            )
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


def test_local_embeddings_are_unit_vectors_of_384_dimensions_and_similar_for_paraphrases(
    embedder: LocalEmbedder,
) -> None:
    a, b, c = embedder.embed(
        ["How do I fix a flat tyre?", "Repairing a punctured bicycle tire", "Baking bread"]
    )
    assert len(a) == DIMENSION
    assert sum(x * x for x in a) == pytest.approx(1.0, abs=1e-4)
    dot = lambda u, v: sum(x * y for x, y in zip(u, v, strict=True))  # noqa: E731
    assert dot(a, b) > dot(a, c) + 0.2
    assert embedder.embed([]) == []


def test_the_sagemaker_embedder_batches_calls_and_matches_the_local_model(
    sagemaker_stand_in: tuple[str, StandIn], embedder: LocalEmbedder
) -> None:
    url, state = sagemaker_stand_in
    remote = SageMakerEmbedder("minilm-embed", region="us-east-1", endpoint_url=url, batch_size=2)
    texts = ["one fish", "two fish", "red fish", "blue fish", "old fish"]
    vectors = remote.embed(texts)
    assert [path for path, _ in state.calls] == ["/endpoints/minilm-embed/invocations"] * 3
    assert state.calls[0][1] == {"inputs": ["one fish", "two fish"], "normalize": True, "truncate": True}
    for got, want in zip(vectors, embedder.embed(texts), strict=True):
        assert sum(x * y for x, y in zip(got, want, strict=True)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("answer", [{"embeddings": []}, [[0.1, 0.2]], [[0.0] * DIMENSION] * 3])
def test_the_sagemaker_embedder_refuses_answers_that_are_not_one_vector_per_text(
    sagemaker_stand_in: tuple[str, StandIn], answer: Any
) -> None:
    url, state = sagemaker_stand_in
    state.answer_override = answer
    with pytest.raises(EmbeddingError):
        SageMakerEmbedder("e", region="us-east-1", endpoint_url=url).embed(["only one"])
