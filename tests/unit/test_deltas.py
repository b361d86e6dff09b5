"""Adaptive delta pacing (lambdas/core/deltas.py), driven by an injected clock: no sleeps, no I/O."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdas import protocol, wiring
from lambdas.config import Settings
from lambdas.core.deltas import DeltaBatcher, Pacing, stream_posts, wire_bytes

DEFAULT = Pacing()


def run(batcher: DeltaBatcher, pieces: list[tuple[float, str]], end: float) -> list[tuple[float, int, str]]:
    """Feed (time, text) pieces; returns (time, seq, text) of every delta, the final flush included."""
    out = [(t, *d) for t, text in pieces if (d := batcher.add(text, now=t))]
    while tail := batcher.flush(now=end):
        out.append((end, *tail))
    return out


def test_the_first_piece_leaves_at_once_then_the_start_gap_applies() -> None:
    b = DeltaBatcher(Pacing(start_ms=100, max_ms=500, ramp_ms=1000))
    assert b.add("Hel", now=5.0) == (1, "Hel")
    assert b.add("lo", now=5.05) is None
    assert b.add(" wor", now=5.09) is None
    assert b.add("ld", now=5.101) == (2, "lo world")
    assert b.flush(now=5.11) is None
    assert b.add("!", now=5.12) is None
    assert b.flush(now=5.13) == (3, "!")


def test_the_gap_grows_with_the_answer_to_the_maximum() -> None:
    """GIVEN a word every 10 ms for 5 s WHEN no sentence ends THEN gaps start near 100 ms, grow, and
    are 500 ms once the 1 s ramp is over (a fixed pace, or a ramp that stops short, fails this)."""
    times = [t for t, _, _ in run(DeltaBatcher(DEFAULT), [(i * 0.01, " word") for i in range(500)], end=9)]
    gaps = [(a, round(b - a, 3)) for a, b in itertools.pairwise(times[:-1])]
    assert gaps[0][1] == pytest.approx(0.10, abs=0.011)
    assert gaps[1][1] > gaps[0][1] and gaps[2][1] > gaps[1][1]
    late = [g for start, g in gaps if start > 1.2]
    assert late and all(g == pytest.approx(0.50, abs=0.011) for g in late)


def test_a_sentence_end_leaves_early_but_not_before_the_early_share_of_the_gap() -> None:
    b = DeltaBatcher(DEFAULT)
    b.add("First.", now=0.0)
    for i in range(1, 200):
        b.add(" w", now=i * 0.01)
    assert b.flush(now=2.0)  # past the ramp: the gap is 500 ms, a sentence end may go after 350 ms
    assert b.add(" done.", now=2.34) is None
    assert b.add(" ", now=2.35) is not None  # a trailing space still ends the sentence
    assert b.add(" more", now=2.70) is None  # 350 ms later, but no sentence end: waits for 500 ms
    assert b.add("\n", now=2.71) is not None  # a paragraph end


@pytest.mark.parametrize("tokens_per_s", [2, 10, 20, 100, 1000, 5000])
@pytest.mark.parametrize("duration_s", [5, 20])
def test_a_long_answer_posts_at_most_four_deltas_per_second_at_any_model_speed(
    tokens_per_s: int, duration_s: int
) -> None:
    """Worst case: every token ends a sentence, so every delta may leave early."""
    worst = stream_posts(DEFAULT, tokens_per_s, duration_s, tokens_per_sentence=1)
    plain = stream_posts(DEFAULT, tokens_per_s, duration_s)
    assert worst / duration_s <= 4.0
    assert plain <= worst
    if tokens_per_s >= 20:  # a model faster than the pace: 2 per second once the ramp is over
        assert plain / duration_s <= 2 + 5 / duration_s


def test_the_old_fixed_pace_posts_five_times_more() -> None:
    assert stream_posts(Pacing.fixed(50), 20, 15) / 15 == pytest.approx(20, rel=0.05)
    assert stream_posts(Pacing.fixed(50), 20, 15) >= 5 * stream_posts(DEFAULT, 20, 15, 20)


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.tuples(st.floats(0, 0.3), st.text(min_size=0, max_size=400)), min_size=1, max_size=60),
    max_bytes=st.integers(16, 2000),
)
def test_text_is_kept_whole_in_order_with_gapless_seq_and_no_delta_over_the_byte_limit(
    pieces: list[tuple[float, str]], max_bytes: int
) -> None:
    clock, timed = 0.0, []
    for step, text in pieces:
        clock += step
        timed.append((clock, text))
    out = run(DeltaBatcher(Pacing(max_bytes=max_bytes)), timed, end=clock + 1)
    assert "".join(text for _, _, text in out) == "".join(text for _, text in pieces)
    assert [seq for _, seq, _ in out] == list(range(1, len(out) + 1))
    assert all(text and wire_bytes(text) <= max_bytes for _, _, text in out)


def test_a_huge_chunk_of_multibyte_and_control_characters_fits_the_32_kb_frame() -> None:
    text = ('\u00e9\u4e2d\U0001f600\x01"\\' * 20_000)[:100_000]
    b = DeltaBatcher(Pacing.from_settings(Settings()))
    out = run(b, [(0.0, "Hi"), (0.01, text)], end=0.02)
    assert "".join(t for _, _, t in out) == "Hi" + text
    rid = "0" * 36
    for _, seq, piece in out:
        frame = protocol.dump(protocol.Delta(requestId=rid, seq=seq, text=piece))
        assert len(frame.encode()) <= wiring.MAX_FRAME_BYTES
    assert len(out) > 3  # the chunk was cut, not sent whole


@given(st.text(max_size=300))
def test_wire_bytes_is_what_the_text_takes_in_the_frame(text: str) -> None:
    empty = protocol.dump(protocol.Delta(requestId="r", seq=1, text=""))
    frame = protocol.dump(protocol.Delta(requestId="r", seq=1, text=text))
    assert wire_bytes(text) == len(frame.encode()) - len(empty.encode())


def test_pacing_comes_from_the_settings_and_rejects_nonsense() -> None:
    s = Settings(flush_interval_ms=80, flush_max_interval_ms=40, flush_ramp_ms=0, delta_max_bytes=2048)
    p = Pacing.from_settings(s)
    assert (p.start_ms, p.max_ms, p.ramp_ms, p.max_bytes) == (80, 80, 0, 2048)  # max never below start
    with pytest.raises(ValueError, match="pacing"):
        Pacing(start_ms=600, max_ms=500)
    with pytest.raises(ValueError, match="16 bytes"):
        Pacing(max_bytes=8)


def test_a_full_delta_leaves_before_its_gap() -> None:
    b = DeltaBatcher(Pacing(max_bytes=1024))
    b.add("a", now=0)
    assert b.add("x" * 1023, now=0.001) is None
    assert b.add("y", now=0.002) == (2, "x" * 1023 + "y")
