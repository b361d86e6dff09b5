"""Token-aware chunking with overlap.

Tokens here are the pieces of `lambdas.core.tokens.PIECE`: the pre-tokens of a BERT-style tokenizer
(words, single punctuation marks, single CJK characters), with a word longer than 8 characters
counting one more piece per 4 characters. For English they are close to the WordPiece count the
embedding model sees, so the default size (160) leaves headroom under all-MiniLM-L6-v2's 256-piece
window; long runs without spaces (hashes, base64, URLs) and CJK text no longer make a "token" of any
length, so their chunks stay near the window too. Tests check this with the real tokenizer. Counting
needs no tokenizer package, so the Lambda bundle chunks exactly as the laptop does.

Chunks end at a paragraph or sentence boundary when one lies in the last part of the window, and the
next chunk starts at the first sentence inside the overlap, so a fact cut at a border is whole in one
of the two chunks. Chunk text is an exact slice of the source text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lambdas.core.tokens import CJK
from lambdas.core.tokens import PIECE as _TOKEN

_CJK_CHAR = re.compile(f"[{CJK}]")

# Full-width (CJK) sentence ends, written as escapes: U+3002 ideographic full stop, U+FF01 exclamation
# mark, U+FF1F question mark, U+FF1B semicolon. A sentence ends at one without a following space.
_CJK_SENTENCE_END = frozenset("\u3002\uff01\uff1f\uff1b")
_SENTENCE_END = frozenset(".!?:;") | _CJK_SENTENCE_END
DEFAULT_CHUNK_TOKENS = 160
DEFAULT_OVERLAP_TOKENS = 32


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a document: its position, text and token count."""

    ordinal: int
    text: str
    tokens: int


def count_tokens(text: str) -> int:
    """Pieces of `text` (words, a piece per 4 characters beyond a word's 8th, marks, CJK characters)."""
    return sum(1 for _ in _TOKEN.finditer(text))


def chunk_text(
    text: str, *, max_tokens: int = DEFAULT_CHUNK_TOKENS, overlap: int = DEFAULT_OVERLAP_TOKENS
) -> list[Chunk]:
    """Split `text` into chunks of at most `max_tokens` tokens, consecutive chunks sharing up to
    `overlap` tokens."""
    if max_tokens < 8:
        raise ValueError("max_tokens must be at least 8.")
    if not 0 <= overlap < max_tokens // 2:
        raise ValueError("overlap must be between 0 and half of max_tokens.")
    spans = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
    if not spans:
        return []
    starts = _sentence_starts(text, spans)
    paragraph_starts = _paragraph_starts(text, spans)
    words = _word_starts(text, spans)
    chunks: list[Chunk] = []
    begin = 0
    total = len(spans)
    while begin < total:
        end = min(begin + max_tokens, total)
        if end < total:
            end = _best_cut(begin, end, max_tokens, starts, paragraph_starts, words)
        piece = text[spans[begin][0] : spans[end - 1][1]]
        chunks.append(Chunk(ordinal=len(chunks), text=piece, tokens=end - begin))
        if end >= total:
            break
        begin = _next_begin(begin, end, overlap, starts, words)
    return chunks


def _sentence_starts(text: str, spans: list[tuple[int, int]]) -> set[int]:
    """Token indexes that begin a sentence (after end punctuation, a newline, or at the start)."""
    found = {0}
    for i in range(1, len(spans)):
        prev_start, prev_end = spans[i - 1]
        gap = text[prev_end : spans[i][0]]
        mark = text[prev_start]
        if "\n" in gap or (mark in _SENTENCE_END and gap) or mark in _CJK_SENTENCE_END:
            found.add(i)
    return found


def _paragraph_starts(text: str, spans: list[tuple[int, int]]) -> set[int]:
    """Token indexes that begin a paragraph (after a blank line) or a Markdown heading."""
    found = {0}
    for i in range(1, len(spans)):
        gap = text[spans[i - 1][1] : spans[i][0]]
        if gap.count("\n") >= 2 or ("\n" in gap and text[spans[i][0]] == "#"):
            found.add(i)
    return found


def _word_starts(text: str, spans: list[tuple[int, int]]) -> set[int]:
    """Token indexes that begin a word (or a mark, or a CJK character): every index but the later
    pieces of a long word, which are not cut apart unless the word fills a whole window."""
    found = {0}
    for i in range(1, len(spans)):
        start = spans[i][0]
        joined = start == spans[i - 1][1] and _in_word(text[start - 1]) and _in_word(text[start])
        if not joined:
            found.add(i)
    return found


def _in_word(ch: str) -> bool:
    return (ch.isalnum() or ch == "_") and not _CJK_CHAR.match(ch)


def _best_cut(
    begin: int, end: int, max_tokens: int, starts: set[int], paragraphs: set[int], words: set[int]
) -> int:
    """The end (exclusive) of the chunk starting at `begin`: a paragraph break in the last half of
    the window, else a sentence break in its last third, else the last word break, else the full
    window (one word longer than it)."""
    for floor, boundaries in (
        (begin + max_tokens // 2, paragraphs),
        (begin + (2 * max_tokens) // 3, starts),
        (begin, words),
    ):
        for cut in range(end, floor, -1):
            if cut in boundaries:
                return cut
    return end


def _next_begin(begin: int, end: int, overlap: int, starts: set[int], words: set[int]) -> int:
    """Where the next chunk starts: the first sentence start inside the overlap, else the first word
    start from `end - overlap` on, else `end - overlap`."""
    if overlap == 0:
        return end
    for boundaries in (starts, words):
        for candidate in range(end - overlap, end + 1):
            if candidate in boundaries and candidate > begin:
                return candidate
    return max(end - overlap, begin + 1)
