"""The `transformers` backend on a tiny random Llama model built in the test (no downloads).

Checks the KV cache and dynamic batching against unbatched, cache-free decoding and against
transformers' own `generate`, the stop rules, LoRA selection through peft, and the errors.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import uvicorn
from transformers import AutoModelForCausalLM, AutoTokenizer

from lambdas.adapters.model import ChunkParser, HttpTransport, ModelChunk
from sagemaker_containers.server.app import create_app
from sagemaker_containers.server.backends import load_backend
from sagemaker_containers.server.backends.base import BackendError, ChatRequest, TokenEvent
from sagemaker_containers.server.backends.text_stream import TextStream
from sagemaker_containers.server.backends.transformers_backend import TransformersBackend
from tests.helpers.tiny_model import create_tiny_lora, create_tiny_model

PROMPTS = [
    "Hi",
    "Tell me about the quick brown fox and the lazy dog, in detail please.",
    "Köln 東京 🙂?",
    "Why do caches make each decoding step cheaper than the one before?",
    "x",
]


@dataclass
class Answer:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    pieces: int


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def lora_dirs(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("lora")
    return {
        name: str(create_tiny_lora(model_dir, root / name, seed))
        for name, seed in (("alpha", 1), ("beta", 2))
    }


@pytest.fixture
async def backend(model_dir: Path) -> AsyncIterator[TransformersBackend]:
    served = TransformersBackend(str(model_dir))
    yield served
    await served.aclose()


def chat(text: str, max_tokens: int = 24, **options: object) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], max_tokens=max_tokens, **options)  # type: ignore[arg-type]


async def answer(backend: TransformersBackend, request: ChatRequest) -> Answer:
    events: list[TokenEvent] = [event async for event in backend.generate(request)]
    last = events[-1]
    assert all(event.finish_reason is None for event in events[:-1])
    return Answer(
        "".join(e.text for e in events),
        last.finish_reason,
        last.prompt_tokens,
        last.completion_tokens,
        len(events),
    )


async def one_by_one(model_dir: Path, requests: list[ChatRequest], **options: object) -> list[Answer]:
    backend = TransformersBackend(str(model_dir), max_batch_size=1, **options)  # type: ignore[arg-type]
    try:
        return [await answer(backend, request) for request in requests]
    finally:
        await backend.aclose()


def reference_tokens(model_dir: Path, request: ChatRequest, eos: list[int] | None = None) -> list[int]:
    """Greedy ids from transformers' own `generate`, the independent reference."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(request.messages, add_generation_prompt=True)["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=request.max_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
        )
    return [int(t) for t in out[0, len(prompt) :]]


async def test_greedy_output_with_the_kv_cache_equals_output_without_it(model_dir: Path) -> None:
    requests = [chat(prompt, max_tokens=32) for prompt in PROMPTS]
    with_cache = await one_by_one(model_dir, requests)
    without_cache = await one_by_one(model_dir, requests, use_kv_cache=False)
    assert with_cache == without_cache
    assert all(a.finish_reason == "length" and a.completion_tokens == 32 for a in with_cache)
    assert len({a.text for a in with_cache}) == len(PROMPTS)  # the prompts really steer the model


async def test_greedy_output_equals_transformers_generate(
    model_dir: Path, backend: TransformersBackend
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for prompt in PROMPTS[:3]:
        request = chat(prompt, max_tokens=20)
        expected = tokenizer.decode(reference_tokens(model_dir, request), skip_special_tokens=True)
        got = await answer(backend, request)
        assert got.text == expected
        assert got.prompt_tokens == len(backend.encode(request.messages))


async def test_batched_output_equals_one_by_one_output_when_requests_join_mid_flight(model_dir: Path) -> None:
    """Prompts of different lengths and answer lengths; three requests arrive while two are decoding."""
    requests = [chat(prompt, max_tokens=12 + 7 * i) for i, prompt in enumerate(PROMPTS)]
    expected = await one_by_one(model_dir, requests)

    backend = TransformersBackend(str(model_dir), max_batch_size=16)
    try:
        first_tokens = asyncio.Event()

        async def early(request: ChatRequest) -> Answer:
            events: list[TokenEvent] = []
            async for event in backend.generate(request):
                events.append(event)
                if len(events) == 3:
                    first_tokens.set()
            last = events[-1]
            return Answer(
                "".join(e.text for e in events),
                last.finish_reason,
                last.prompt_tokens,
                last.completion_tokens,
                len(events),
            )

        async def late(request: ChatRequest) -> Answer:
            await first_tokens.wait()
            return await answer(backend, request)

        batched = await asyncio.gather(
            early(requests[0]), early(requests[4]), *(late(r) for r in requests[1:4])
        )
        got = [batched[0], batched[2], batched[3], batched[4], batched[1]]
        assert [(a.text, a.finish_reason, a.completion_tokens) for a in got] == [
            (a.text, a.finish_reason, a.completion_tokens) for a in expected
        ]
        total_tokens = sum(a.completion_tokens for a in got)
        assert backend.stats.largest_batch >= 3
        assert backend.stats.decode_steps < total_tokens - len(requests)  # decode passes were shared
    finally:
        await backend.aclose()


async def test_batched_output_without_the_cache_equals_one_by_one_output(model_dir: Path) -> None:
    requests = [chat(prompt, max_tokens=10 + 3 * i) for i, prompt in enumerate(PROMPTS)]
    expected = await one_by_one(model_dir, requests)
    backend = TransformersBackend(str(model_dir), max_batch_size=16, use_kv_cache=False)
    try:
        got = await asyncio.gather(*(answer(backend, r) for r in requests))
        assert [(a.text, a.completion_tokens) for a in got] == [
            (a.text, a.completion_tokens) for a in expected
        ]
        assert backend.stats.largest_batch > 1
    finally:
        await backend.aclose()


def test_streamed_json_lines_parse_with_the_workers_chunk_parser(model_dir: Path) -> None:
    """The LMI `/invocations` streaming contract over real HTTP: JSON lines of chat.completion.chunk,
    read by the worker's own transport and ChunkParser, cut every 3 bytes (inside UTF-8 characters)."""
    request = chat(PROMPTS[2], max_tokens=30)
    expected = asyncio.run(one_by_one(model_dir, [request]))[0]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(TransformersBackend(str(model_dir))), host="127.0.0.1", port=0, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the model server did not start"
            threading.Event().wait(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        transport = HttpTransport(f"http://127.0.0.1:{port}/invocations", timeout_s=60)
        body = {"messages": request.messages, "max_tokens": 30, "stream": True}
        raw = b"".join(transport.stream(body))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    parser = ChunkParser()
    chunks: list[ModelChunk] = []
    for offset in range(0, len(raw), 3):
        chunks += parser.feed(raw[offset : offset + 3])
    chunks += parser.close()
    assert all(json.loads(line)["object"] == "chat.completion.chunk" for line in raw.splitlines())
    assert "".join(c.text for c in chunks) == expected.text
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage == (expected.prompt_tokens, 30)


async def test_a_stop_string_ends_the_answer_before_it(backend: TransformersBackend) -> None:
    full = await answer(backend, chat(PROMPTS[1], max_tokens=40))
    stop = full.text[10:13]
    cut = full.text.index(stop)
    stopped = await answer(backend, chat(PROMPTS[1], max_tokens=40, stop=("never-there", stop)))
    assert stopped.text == full.text[:cut]
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < 40


async def test_an_end_of_turn_token_ends_the_answer_with_stop(model_dir: Path, tmp_path: Path) -> None:
    request = chat(PROMPTS[3], max_tokens=20)
    tokens = reference_tokens(model_dir, request)
    eos_dir = tmp_path / "eos"
    shutil.copytree(model_dir, eos_dir)
    generation_config = json.loads((eos_dir / "generation_config.json").read_text())
    # declare the fifth greedy token an end-of-turn token (the tiny model never emits the real one)
    generation_config["eos_token_id"] = [generation_config["eos_token_id"], tokens[4]]
    (eos_dir / "generation_config.json").write_text(json.dumps(generation_config))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    first_stop = tokens.index(tokens[4])

    got = await one_by_one(eos_dir, [request])
    assert got[0].finish_reason == "stop"
    assert got[0].completion_tokens == first_stop + 1
    assert got[0].text == tokenizer.decode(tokens[:first_stop], skip_special_tokens=True)


async def test_sampling_with_a_seed_repeats_and_differs_from_other_seeds(
    backend: TransformersBackend,
) -> None:
    def sampled(seed: int) -> ChatRequest:
        return chat(PROMPTS[0], max_tokens=24, temperature=1.0, top_p=0.9, seed=seed)

    first, again, other = [await answer(backend, sampled(s)) for s in (7, 7, 8)]
    assert first == again
    assert first.text != other.text


async def test_a_client_that_stops_reading_frees_its_batch_slot(model_dir: Path) -> None:
    backend = TransformersBackend(str(model_dir), max_batch_size=1)
    try:
        stream = backend.generate(chat(PROMPTS[0], max_tokens=400))
        await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        got = await asyncio.wait_for(answer(backend, chat(PROMPTS[1], max_tokens=5)), timeout=30)
        assert got.completion_tokens == 5
    finally:
        await backend.aclose()


def test_multi_byte_characters_split_over_tokens_stream_whole(model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = "Grüße aus 東京 🙂 und Köln"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # some character spans several tokens
    stream = TextStream(tokenizer)
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_text_that_may_begin_a_stop_string_is_held_back_until_it_cannot(model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    stream = TextStream(tokenizer, stop=("END!",))
    out = [stream.push(i) for i in tokenizer.encode("one EN two EN", add_special_tokens=False)]
    assert "".join(out) == "one EN two "
    out += [stream.push(i) for i in tokenizer.encode("D! three", add_special_tokens=False)]
    assert "".join(out) == "one EN two " and stream.stopped


async def test_lora_adapters_are_chosen_per_request_and_batched_equals_one_by_one(
    model_dir: Path, lora_dirs: dict[str, str]
) -> None:
    names = [None, "alpha", "beta"]
    requests = [chat(prompt, max_tokens=16, adapter=name) for prompt in PROMPTS[:2] for name in names]
    expected = await one_by_one(model_dir, requests, adapters=lora_dirs)
    backend = TransformersBackend(str(model_dir), max_batch_size=16, adapters=lora_dirs)
    try:
        got = await asyncio.gather(*(answer(backend, r) for r in requests))
    finally:
        await backend.aclose()
    assert [a.text for a in got] == [a.text for a in expected]
    assert len({a.text for a in expected[:3]}) == 3  # each adapter answers differently
    assert len({a.text for a in expected[3:]}) == 3

    plain = await one_by_one(model_dir, [requests[0], requests[3]])
    assert [a.text for a in plain] == [expected[0].text, expected[3].text]  # no adapter: the base model


async def test_an_unknown_adapter_is_refused_before_streaming(
    model_dir: Path, lora_dirs: dict[str, str]
) -> None:
    backend = TransformersBackend(str(model_dir), adapters=lora_dirs)
    try:
        with pytest.raises(BackendError, match="Unknown adapter 'gamma'") as refused:
            await anext(backend.generate(chat("hi", adapter="gamma")))
        assert refused.value.status == 404
    finally:
        await backend.aclose()


async def test_a_prompt_beyond_the_context_is_refused(backend: TransformersBackend) -> None:
    with pytest.raises(BackendError, match="exceeds the model's context of 512 tokens") as refused:
        await anext(backend.generate(chat("hi", max_tokens=600)))
    assert refused.value.status == 400


def test_a_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(BackendError) as refused:
        load_backend("transformers", model_dir=str(missing))
    assert refused.value.message == f"Cannot load the model in '{missing}': no such directory."


def test_an_unloadable_model_directory_is_a_clear_error(model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BackendError, match=rf"^Cannot load the model in '{broken}': .+\.$"):
        TransformersBackend(str(broken))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendError, match=r"^Cannot load the model in '.*empty': .+\.$"):
        TransformersBackend(str(tmp_path / "empty"))
