"""The model stream parser and the circuit breaker: pure logic, no I/O."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdas.adapters.model import ChunkParser, CircuitBreaker, ModelChunk
from lambdas.errors import ModelUnavailable


def chat_chunk(content: str | None, finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": content},
                         "logprobs": None, "finish_reason": finish}]}


USAGE_ONLY = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
              "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}}
PIECES = ["Grüße", " aus", " 東京", " 🎉"]


def jsonlines(objects: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(o, ensure_ascii=False).encode() + b"\n" for o in objects)


def sse(objects: list[dict[str, Any]]) -> bytes:
    body = b"".join(b"data: " + json.dumps(o, ensure_ascii=False).encode() + b"\n\n" for o in objects)
    return b": keep-alive\n\n" + body + b"data: [DONE]\n\n"


STREAM = jsonlines([chat_chunk(p) for p in PIECES[:-1]] + [chat_chunk(PIECES[-1], "stop"), USAGE_ONLY])


def parse(pieces: list[bytes]) -> list[ModelChunk]:
    parser = ChunkParser()
    out = [chunk for piece in pieces for chunk in parser.feed(piece)]
    return out + parser.close()


def answer(chunks: list[ModelChunk]) -> tuple[str, str | None, tuple[int, int] | None]:
    return "".join(c.text for c in chunks), chunks[-1].finish_reason, chunks[-1].usage


def test_a_stream_fed_whole_gives_text_finish_and_usage_on_the_last_chunk() -> None:
    chunks = parse([STREAM])
    assert answer(chunks) == ("".join(PIECES), "stop", (7, 4))
    assert all(c.finish_reason is None for c in chunks[:-1])


def test_every_split_point_gives_the_same_answer_even_inside_a_utf8_character() -> None:
    whole = answer(parse([STREAM]))
    assert any(b >= 0x80 for b in STREAM)  # the stream has multi-byte characters to cut through
    for cut in range(len(STREAM) + 1):
        assert answer(parse([STREAM[:cut], STREAM[cut:]])) == whole, cut


def test_byte_by_byte_feeding_gives_the_same_answer() -> None:
    assert answer(parse([bytes([b]) for b in STREAM])) == answer(parse([STREAM]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_partition_of_the_stream_gives_the_same_answer(cuts: list[int]) -> None:
    edges = [0, *sorted(cuts), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(edges)]
    assert answer(parse(pieces)) == ("".join(PIECES), "stop", (7, 4))


def test_sse_data_lines_and_bare_json_lines_give_the_same_chunks() -> None:
    objects = [chat_chunk(p) for p in PIECES[:-1]] + [chat_chunk(PIECES[-1], "stop"), USAGE_ONLY]
    assert parse([sse(objects)]) == parse([jsonlines(objects)])


def test_the_usage_only_chunk_yields_nothing_but_its_usage_rides_on_the_finishing_chunk() -> None:
    parser = ChunkParser()
    assert parser.feed(jsonlines([chat_chunk("Hi", "length")])) == [ModelChunk("Hi")]
    assert parser.feed(jsonlines([USAGE_ONLY])) == [ModelChunk("", "length", (7, 4))]
    assert parser.close() == []


def test_without_usage_the_finishing_chunk_comes_at_close_with_no_usage() -> None:
    parser = ChunkParser()
    assert parser.feed(jsonlines([chat_chunk("Hi"), chat_chunk(None, "stop")])) == [ModelChunk("Hi")]
    assert parser.close() == [ModelChunk("", "stop", None)]


def test_role_only_and_null_content_chunks_produce_no_text_chunk() -> None:
    role_only: dict[str, Any] = {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}
    nulls: dict[str, Any] = {"choices": [{"delta": None, "finish_reason": None}], "usage": None}
    chunks = parse([jsonlines([role_only, nulls, chat_chunk("ok", "stop")])])
    assert chunks == [ModelChunk("ok"), ModelChunk("", "stop", None)]


def test_lmi_tgi_style_lines_with_null_fields_are_read() -> None:
    lines: list[dict[str, Any]] = [
        {"index": 0, "token": {"id": 1, "text": "Deep", "logprob": -0.1},
         "generated_text": None, "details": None},
        {"token": {"id": 2, "text": "</s>", "special": True}},
        {"index": 0, "token": {"id": 3, "text": " learning", "logprob": -0.2},
         "generated_text": "Deep learning",
         "details": {"finish_reason": "length", "generated_tokens": 2, "input_length": 5}},
    ]
    assert answer(parse([jsonlines(lines)])) == ("Deep learning", "length", (5, 2))


def test_a_whole_non_streamed_chat_completion_is_read() -> None:
    choice = {"index": 0, "message": {"role": "assistant", "content": "All of it"}, "finish_reason": "stop"}
    whole = {"object": "chat.completion", "choices": [choice],
             "usage": {"prompt_tokens": 3, "completion_tokens": 3}}
    assert answer(parse([json.dumps(whole).encode()])) == ("All of it", "stop", (3, 3))


@pytest.mark.parametrize(
    "line",
    [
        chat_chunk("", "error"),
        {"token": {"id": -1, "text": ""}, "generated_text": None, "details": {"finish_reason": "error"}},
        {"error": "CUDA out of memory", "code": 424},
    ],
    ids=["chat-finish-error", "tgi-finish-error", "error-object"],
)
def test_an_error_in_the_stream_raises_model_unavailable(line: dict[str, Any]) -> None:
    parser = ChunkParser()
    assert parser.feed(jsonlines([chat_chunk("partial")])) == [ModelChunk("partial")]
    with pytest.raises(ModelUnavailable):
        parser.feed(jsonlines([line]))


@pytest.mark.parametrize(
    "line", [b"{not json\n", b"[1, 2]\n", b'"text"\n', b'{"unexpected": 1}\n', b"\xff\xfe\n"]
)
def test_an_unreadable_line_raises_model_unavailable(line: bytes) -> None:
    with pytest.raises(ModelUnavailable):
        ChunkParser().feed(line)


def test_a_stream_that_ends_without_a_finish_reason_raises_at_close() -> None:
    parser = ChunkParser()
    parser.feed(jsonlines([chat_chunk("cut"), chat_chunk(" off")]))
    with pytest.raises(ModelUnavailable):
        parser.close()


def test_a_last_line_without_a_newline_is_read_at_close() -> None:
    parser = ChunkParser()
    assert parser.feed(json.dumps(chat_chunk("end", "stop")).encode()) == []
    assert parser.close() == [ModelChunk("end"), ModelChunk("", "stop", None)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_s=30, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the consecutive count
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.allow()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"  # type: ignore[comparison-overlap]  # mypy keeps the narrowed literal
    assert not breaker.allow()
    clock.now += 10
    assert breaker.retry_after() == pytest.approx(20)


def test_breaker_half_opens_after_reset_and_lets_exactly_one_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_s=30, clock=clock)
    breaker.record_failure()
    clock.now += 30
    assert breaker.state == "half-open"
    assert breaker.allow()
    assert not breaker.allow()  # a second caller waits for the probe's outcome
    breaker.record_success()
    assert breaker.state == "closed"  # type: ignore[comparison-overlap]  # mypy keeps the narrowed literal
    assert breaker.allow() and breaker.retry_after() == 0


def test_a_failed_probe_opens_the_breaker_again_for_a_full_reset_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_s=30, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 31
    assert breaker.allow()
    breaker.record_failure()  # one failure suffices in half-open
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 29
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_a_probe_that_never_reports_is_replaced_after_the_reset_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_s=30, clock=clock)
    breaker.record_failure()
    clock.now += 30
    assert breaker.allow()
    clock.now += 29
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_breaker_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(reset_s=0)
