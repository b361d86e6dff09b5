"""OpenAI-compatible access, driven by the official `openai` Python SDK exactly as users' code does,
against a real `chatstack up`: streamed and whole answers on the same pipeline as the WebSocket
(auth with a JWT or an API key as the bearer, retrieval with citations, memory through a
conversation id, the usage ledger), model choice among the deployment's offered models, and the
tenant's LoRA adapter reaching the model server.

Contract checked: OpenAI's Chat Completions API as the SDK speaks it (`chat.completions.create`,
`stream=True` with `stream_options={"include_usage": True}` yielding `chat.completion.chunk`s and a
final usage chunk with empty `choices`, `models.list`, errors as `{"error": {"message", ...}}`), and
LMI's `adapters` body field on the model server (an adapter it has not loaded is refused).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from chatstack.client import ChatClient
from chatstack.client import ChatError as ClientChatError
from tests.helpers.service import Service, start_service, stop_service

pytestmark = pytest.mark.e2e
DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
TENANT = "t-openai"
QUESTION = "How long do the frames of an answer stay in the Redis stream for resume?"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "CHATSTACK_MODELS": "local-extractive,extractive-second",
        # the adapter the model server loads for TENANT; another tenant is mapped to one it lacks
        "CHATSTACK_TENANT_ADAPTERS": f"{TENANT}=support-lora,t-unloaded=missing-lora",
    }
    data_dir = tmp_path_factory.mktemp("openai") / "data"
    svc = start_service(data_dir, "--token-rate", "0", "--adapter", f"support-lora={data_dir}", env=env)
    done = subprocess.run(
        [sys.executable, "-m", "chatstack.cli", "ingest", str(DOC), "--tenant", TENANT,
         "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    yield svc
    stop_service(svc)


def sdk(service: Service, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=service.base + "/v1", api_key=api_key, max_retries=0, timeout=180)


def test_models_lists_the_offered_models_default_first(service: Service) -> None:
    client = sdk(service, service.token(tenant=TENANT))
    models = client.models.list()
    assert [m.id for m in models.data] == ["local-extractive", "extractive-second"]
    assert client.models.retrieve("extractive-second").id == "extractive-second"  # the SDK's retrieve
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_a_whole_answer_quotes_and_cites_the_tenants_document_and_is_metered(service: Service) -> None:
    client = sdk(service, service.token(user="whole", tenant=TENANT))
    completion = client.chat.completions.create(
        model="local-extractive", messages=[{"role": "user", "content": QUESTION}]
    )
    assert completion.object == "chat.completion"
    answer = completion.choices[0].message.content or ""
    assert "15 min" in answer and re.search(r"\[\d+\]", answer)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    extra = completion.model_extra or {}
    assert {Path(c["source"]).name for c in extra["citations"]} == {"protocol.md"}
    # the same pipeline: the exchange is a stored conversation with token counts on the answer
    messages = httpx.get(f"{service.base}/v1/conversations/{extra['conversation_id']}/messages",
                         headers={"Authorization": f"Bearer {service.token(user='whole', tenant=TENANT)}"},
                         timeout=10).json()["items"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["outputTokens"] == completion.usage.completion_tokens


def test_stop_ends_the_answer_before_the_sequence_through_the_whole_pipeline(service: Service) -> None:
    """`stop` reaches the model (job options, the LMI body) and the answer ends before it: it was
    refused at first, and before that silently ignored."""
    client = sdk(service, service.token(user="stopper", tenant=TENANT))
    whole = client.chat.completions.create(
        model="local-extractive", messages=[{"role": "user", "content": QUESTION}]
    ).choices[0].message.content or ""
    assert "15 min" in whole
    cut = client.chat.completions.create(
        model="local-extractive", messages=[{"role": "user", "content": QUESTION}], stop=["15 min"]
    ).choices[0]
    assert cut.finish_reason == "stop" and "15 min" not in (cut.message.content or "")
    assert whole.startswith(cut.message.content or "") and len(cut.message.content or "") < len(whole)


def test_a_streamed_answer_arrives_in_chunks_with_a_final_usage_chunk(service: Service) -> None:
    client = sdk(service, service.token(user="streamer", tenant=TENANT))
    stream = client.chat.completions.create(
        model="extractive-second",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "15 min" in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # really streamed
    assert not chunks[-1].choices and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_an_api_key_as_the_bearer_works_and_a_bad_one_is_refused(service: Service) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "chatstack.cli", "keys", "create", "--tenant", TENANT, "--name", "sdk",
         "--data-dir", str(service.data_dir)],
        capture_output=True, text=True, timeout=120,
    )
    assert made.returncode == 0, made.stderr
    completion = sdk(service, made.stdout.strip()).chat.completions.create(
        model="local-extractive", messages=[{"role": "user", "content": QUESTION}]
    )
    assert "15 min" in (completion.choices[0].message.content or "")
    with pytest.raises(openai.AuthenticationError):
        sdk(service, "csk_notarealkey_000000").models.list()


def test_a_conversation_id_continues_the_same_conversation(service: Service) -> None:
    token = service.token(user="memory", tenant=TENANT)
    client = sdk(service, token)
    first = client.chat.completions.create(
        model="local-extractive", messages=[{"role": "user", "content": "My bike is blue. Remember it."}]
    )
    cid = (first.model_extra or {})["conversation_id"]
    again = client.chat.completions.create(
        model="local-extractive", messages=[{"role": "user", "content": "What colour is my bike?"}],
        extra_body={"conversation_id": cid},
    )
    assert (again.model_extra or {})["conversation_id"] == cid
    messages = httpx.get(f"{service.base}/v1/conversations/{cid}/messages",
                         headers={"Authorization": f"Bearer {token}"}, timeout=10).json()["items"]
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        "My bike is blue. Remember it.", "What colour is my bike?"]


def test_a_model_the_deployment_does_not_offer_is_refused_naming_the_choices(service: Service) -> None:
    client = sdk(service, service.token(tenant=TENANT))
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "local-extractive, extractive-second" in str(refused.value)


def test_options_model_on_the_websocket_is_refused_naming_the_choices(service: Service) -> None:
    async def ask() -> tuple[str, str]:
        async with await ChatClient.connect(service.websocket, token=service.token(tenant=TENANT)) as ws:
            reply = await ws.send("hi", options={"model": "gpt-4o"})
            with pytest.raises(ClientChatError):
                await reply.text()
        assert reply.error is not None
        return reply.error.code, reply.error.message

    code, message = asyncio.run(ask())
    assert code == "BAD_REQUEST" and "local-extractive, extractive-second" in message


def test_the_tenants_adapter_reaches_the_model(service: Service) -> None:
    """TENANT's adapter is loaded and answers; a tenant mapped to an adapter the model server has not
    loaded is refused by the model server itself, which proves the name travelled to the model."""
    served = sdk(service, service.token(tenant=TENANT)).chat.completions.create(
        model="local-extractive", messages=[{"role": "user", "content": QUESTION}]
    )
    assert served.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(service, service.token(tenant="t-unloaded")).chat.completions.create(
            model="local-extractive", messages=[{"role": "user", "content": f"hello {uuid.uuid4()}"}]
        )
    assert "model" in str(refused.value).lower()


def test_the_text_limit_and_bad_text_are_refused_with_a_reason(service: Service) -> None:
    """The same limits as a sendMessage frame (docs/protocol.md): 32,001 characters are TOO_LARGE (the
    route stored 100,000), a lone surrogate a 400 (it was a 500)."""
    headers = {"Authorization": f"Bearer {service.token(user='limits', tenant=TENANT)}",
               "Content-Type": "application/json"}
    url = f"{service.base}/v1/chat/completions"

    def post(content: str) -> httpx.Response:
        # The text as raw JSON, so that a lone surrogate's escape reaches the service as sent.
        body = '{"model": "local-extractive", "messages": [{"role": "user", "content": "' + content + '"}]}'
        return httpx.post(url, headers=headers, content=body, timeout=60)

    too_long = post("x" * 32_001)
    assert too_long.status_code == 413 and too_long.json()["error"]["code"] == "TOO_LARGE"
    surrogate = post("hi \\ud800")
    assert surrogate.status_code == 400 and surrogate.json()["error"]["code"] == "BAD_REQUEST"
