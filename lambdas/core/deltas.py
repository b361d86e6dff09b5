"""Time-based batching of streamed text into delta frames. No I/O: the caller owns the clock and
the sending.

One message per token floods API Gateway (its 10,000 RPS account budget includes @connections
calls), so text is gathered and flushed at most every `interval_s`. The first piece is flushed at
once: time to first token is the latency users feel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# A delta must stay far below API Gateway's 32 KB frame; flush early when the buffer grows this big.
MAX_DELTA_CHARS = 8000


@dataclass
class DeltaBatcher:
    interval_s: float
    seq: int = 0
    _buffer: list[str] = field(default_factory=list)
    _size: int = 0
    _last_flush: float | None = None

    def add(self, text: str, now: float) -> tuple[int, str] | None:
        """Add text; returns (seq, text) when a delta is due now."""
        if text:
            self._buffer.append(text)
            self._size += len(text)
        if not self._buffer:
            return None
        due = (
            self._last_flush is None
            or now - self._last_flush >= self.interval_s
            or self._size >= MAX_DELTA_CHARS
        )
        return self._take(now) if due else None

    def flush(self, now: float) -> tuple[int, str] | None:
        """Whatever is buffered, as a final delta (None when empty)."""
        return self._take(now) if self._buffer else None

    def _take(self, now: float) -> tuple[int, str]:
        text = "".join(self._buffer)
        self._buffer.clear()
        self._size = 0
        self._last_flush = now
        self.seq += 1
        return self.seq, text
