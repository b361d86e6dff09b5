"""Adaptive batching of streamed text into delta frames. No I/O: the caller owns the clock and the
sending.

Every delta is one `@connections` post, and those posts share API Gateway's 10,000 RPS account
budget (and its bill) with everything else, so the pace matters more than the model's speed:

- the first piece leaves at once: time to first token is the latency users feel;
- after it, the gap between deltas grows linearly with the answer's age, from `start_ms` to `max_ms`
  over `ramp_ms` (the page animates text between deltas, so fewer, larger deltas still read smoothly);
- a sentence or paragraph end may leave early, once `early_share` of the current gap has passed, so a
  delta tends to end where a reader pauses;
- a delta never exceeds `max_bytes` of JSON-escaped UTF-8 text, far below API Gateway's 32 KB frame;
  longer text is cut on a character boundary and the rest follows.

With the defaults (100 ms -> 500 ms over 1 s, early at 70 %) no stream of 5 s or more posts more than
4 deltas per second, whatever the model's speed; `stream_posts` lets the planner count them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Protocol

# What a sentence or paragraph ends with (after trailing spaces): the early-flush points.
_UNIT_ENDS = frozenset(".!?;:\n\u2026\u3002\uff01\uff1f")
_ESCAPED = re.compile(r'[\x00-\x1f"\\]')


class PacingSettings(Protocol):
    """The settings fields the pacing reads (lambdas.config.Settings has them)."""

    @property
    def flush_interval_ms(self) -> int: ...
    @property
    def flush_max_interval_ms(self) -> int: ...
    @property
    def flush_ramp_ms(self) -> int: ...
    @property
    def flush_early_share(self) -> float: ...
    @property
    def delta_max_bytes(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Pacing:
    start_ms: float = 100.0
    max_ms: float = 500.0
    ramp_ms: float = 1000.0
    early_share: float = 0.7
    max_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        if not (0 <= self.start_ms <= self.max_ms and self.ramp_ms >= 0 and 0 < self.early_share <= 1):
            raise ValueError(f"inconsistent pacing {self}: need 0 <= start <= max, ramp >= 0, 0 < early <= 1")
        if self.max_bytes < 16:
            raise ValueError("a delta must hold at least 16 bytes (one character escapes to at most 6)")

    @classmethod
    def from_settings(cls, s: PacingSettings) -> Pacing:
        return cls(
            start_ms=s.flush_interval_ms,
            max_ms=max(s.flush_interval_ms, s.flush_max_interval_ms),
            ramp_ms=s.flush_ramp_ms,
            early_share=s.flush_early_share,
            max_bytes=s.delta_max_bytes,
        )

    @classmethod
    def fixed(cls, interval_ms: float) -> Pacing:
        """The old rule: one delta every `interval_ms`, no ramp, no early flush."""
        return cls(start_ms=interval_ms, max_ms=interval_ms, ramp_ms=0.0, early_share=1.0)

    def gap_s(self, age_s: float) -> float:
        """The regular gap after a delta sent `age_s` seconds after the first one."""
        if self.ramp_ms <= 0 or age_s * 1000 >= self.ramp_ms:
            return self.max_ms / 1000
        return (self.start_ms + (self.max_ms - self.start_ms) * age_s * 1000 / self.ramp_ms) / 1000


def wire_bytes(text: str) -> int:
    """Bytes `text` takes inside a JSON frame: UTF-8, with JSON's escapes (a control character is 6)."""
    if _ESCAPED.search(text) is None:  # the usual token: no escapes, skip the encoder (hot path)
        return len(text) if text.isascii() else len(text.encode())
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def _ends_unit(text: str) -> bool | None:
    """True/False when `text` does/does not end a sentence or paragraph; None for blank text."""
    if text.endswith("\n"):
        return True
    stripped = text.rstrip()
    return stripped[-1] in _UNIT_ENDS if stripped else None


@dataclass
class DeltaBatcher:
    pacing: Pacing = field(default_factory=Pacing)
    seq: int = 0
    _buffer: list[str] = field(default_factory=list)
    _bytes: int = 0
    _at_unit_end: bool = False
    _first: float | None = None
    _last: float | None = None

    def add(self, text: str, now: float) -> tuple[int, str] | None:
        """Add text; returns (seq, text) when a delta is due now."""
        if text:
            self._buffer.append(text)
            self._bytes += wire_bytes(text)
            ends = _ends_unit(text)
            if ends is not None:
                self._at_unit_end = ends
        if not self._buffer:
            return None
        if self._first is None or self._last is None or self._bytes >= self.pacing.max_bytes:
            return self._take(now)
        gap = self.pacing.gap_s(self._last - self._first)  # set by the age of the last delta
        waited = now - self._last
        waited += 1e-9  # clock arithmetic: a token exactly one gap later is due
        if waited >= gap or (self._at_unit_end and waited >= gap * self.pacing.early_share):
            return self._take(now)
        return None

    def flush(self, now: float) -> tuple[int, str] | None:
        """The next piece of whatever is buffered, as a delta (None when empty). Text longer than one
        delta comes out in several pieces: call until None."""
        return self._take(now) if self._buffer else None

    def _take(self, now: float) -> tuple[int, str]:
        text = "".join(self._buffer)
        self._buffer.clear()
        if self._bytes > self.pacing.max_bytes:
            cut = _fit(text, self.pacing.max_bytes)
            text, rest = text[:cut], text[cut:]
            self._buffer.append(rest)
            self._bytes = wire_bytes(rest)
        else:
            self._bytes = 0
        if self._first is None:
            self._first = now
        self._last = now
        self.seq += 1
        return self.seq, text


def _fit(text: str, limit: int) -> int:
    """The longest prefix of `text` (in characters, so never inside one) within `limit` wire bytes."""
    lo, hi = 1, len(text)  # one character always fits: it escapes to at most 6 bytes, limit >= 16
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if wire_bytes(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def stream_posts(pacing: Pacing, tokens_per_s: float, duration_s: float, tokens_per_sentence: int = 0) -> int:
    """Deltas one stream posts when a model yields `tokens_per_s` for `duration_s`, a sentence ending
    every `tokens_per_sentence` tokens (0: never). Runs the batcher itself, so the planner's figure is
    the service's rule, not a copy of it."""
    batcher = DeltaBatcher(pacing)
    tokens = max(1, round(tokens_per_s * duration_s))
    posts = 0
    for i in range(tokens):
        end = tokens_per_sentence > 0 and (i + 1) % tokens_per_sentence == 0
        if batcher.add(" word." if end else " word", i / tokens_per_s):
            posts += 1
    while batcher.flush(duration_s):
        posts += 1
    return posts
