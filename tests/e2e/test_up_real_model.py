"""`chatstack up --model hf:ORG/NAME` serves a real (tiny, random) Hugging Face model through the
whole service: the model comes from the Hugging Face cache (built here in its documented layout,
HF_HUB_OFFLINE=1, so nothing is downloaded), the transformers backend generates, and an answer
streams back through the OpenAI-compatible endpoint and the WebSocket pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from chatstack.client import ChatClient
from tests.functional.test_model_source import cache_with
from tests.helpers.service import Service, start_service, stop_service
from tests.helpers.tiny_model import create_tiny_model

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("real-model")
    create_tiny_model(cache_with(root / "hub", "test-org/tiny-chat"))
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(root / "hub"), "HF_HOME": str(root),
           "CHATSTACK_RAG_TOP_K": "0", "CHATSTACK_MAX_OUTPUT_TOKENS": "8"}
    svc = start_service(root / "data", "--model", "hf:test-org/tiny-chat", env=env)
    yield svc
    stop_service(svc)


def test_the_cached_hub_model_answers_through_the_openai_endpoint(service: Service) -> None:
    client = openai.OpenAI(base_url=service.base + "/v1", api_key=service.token(), max_retries=0, timeout=180)
    assert [m.id for m in client.models.list().data] == ["tiny-chat"]  # the model's name, not a default
    completion = client.chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": "Hello there"}], max_tokens=8
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 8


def test_the_cached_hub_model_streams_over_the_websocket(service: Service) -> None:
    async def ask() -> int:
        async with await ChatClient.connect(service.websocket, token=service.token()) as ws:
            reply = await ws.send("Hello again", options={"maxTokens": 8})
            await reply.text()
            assert reply.done is not None
            return reply.done.usage.output_tokens

    assert 0 < asyncio.run(ask()) <= 8


def test_the_service_log_has_no_traceback(service: Service) -> None:
    log = (Path(service.data_dir).parent / f"{Path(service.data_dir).name}.log").read_text()
    assert "Traceback" not in log
