"""Token ids in, safe text pieces out: incremental detokenization plus stop strings. No torch, no I/O.

A byte-level tokenizer can split one character over several tokens, so decoding each token alone
would emit replacement characters. `TextStream` decodes a small window of recent tokens and holds
text back while it ends in an incomplete character, or while it could be the start of a stop string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

_INCOMPLETE = "\ufffd"


class Decoder(Protocol):
    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class TextStream:
    """Turns the completion's token ids, one at a time, into text pieces that never need retracting."""

    def __init__(self, tokenizer: Decoder, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._ids: list[int] = []
        # The window [prefix_offset, read_offset) was already turned into text; decoding it again
        # together with the new tokens gives the context that tokenizers need for spaces.
        self._prefix_offset = 0
        self._read_offset = 0
        self._text = ""  # everything decoded so far
        self._emitted = 0  # how much of _text was handed out
        self.stopped = False  # a stop string was found; the caller ends the stream

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text that can be shown now ("" while held back)."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        self._text += self._decode_new(final=False)
        return self._release(final=False)

    def flush(self) -> str:
        """The end of the completion: return whatever was held back."""
        if self.stopped:
            return ""
        self._text += self._decode_new(final=True)
        return self._release(final=True)

    def _decode_new(self, *, final: bool) -> str:
        window = self._ids[self._prefix_offset :]
        prefix = self._tokenizer.decode(
            window[: self._read_offset - self._prefix_offset], skip_special_tokens=True
        )
        full = self._tokenizer.decode(window, skip_special_tokens=True)
        if len(full) > len(prefix) and (final or not full.endswith(_INCOMPLETE)):
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return full[len(prefix) :]
        if final:
            self._prefix_offset = self._read_offset = len(self._ids)
        return ""

    def _release(self, *, final: bool) -> str:
        start = self._emitted
        hits = [i for s in self._stop if (i := self._text.find(s, max(0, start - len(s) + 1))) >= 0]
        if hits:
            end = min(hits)
            self.stopped = True
        elif final:
            end = len(self._text)
        else:
            end = max(start, len(self._text) - self._partial_stop_length())
        self._emitted = max(start, end)
        return self._text[start:end]

    def _partial_stop_length(self) -> int:
        """The longest tail of the text that is a proper prefix of a stop string."""
        longest = 0
        for stop in self._stop:
            for k in range(min(len(stop) - 1, len(self._text)), longest, -1):
                if self._text.endswith(stop[:k]):
                    longest = k
                    break
        return longest
