"""The extractive backend: answers by quoting the retrieved passages and the conversation. No weights.

Prompt contract (the worker builds it): the system message may contain a line exactly
`Context passages:` followed by passage blocks, each starting with `[n] <title>` on its own line,
then the passage text with every line quoted by `> ` (`>` alone for a blank line); blocks are
separated by a blank line. A quoted line is always text, never a header, so a document cannot forge
passage numbers. Unquoted text lines (the format before quoting) are still read as text.

Candidates are the sentences of those passages plus the sentences of earlier user and assistant
turns. Each is scored by the overlap of its content words (lower-cased, stopwords removed, crude
suffix stripping) with the last user message; the answer quotes the best one to three sentences,
citing passages as `[n]`. The output is a pure function of the request: same input, same tokens.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from sagemaker_containers.server.backends.base import BackendError, ChatRequest, TokenEvent

CONTEXT_MARKER = "Context passages:"
NOTHING_FOUND = "I could not find anything relevant to that in the provided passages or our conversation."
MAX_QUOTED = 3

_PIECE = re.compile(r"\s*\S+")
_WORD = re.compile(r"[^\W_]+")
_PASSAGE_HEADER = re.compile(r"^\[(\d+)\]\s*(.*)$")
_CITATION = re.compile(r"\[(\d+)\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")  # a sentence end, or a paragraph break
_SUFFIXES = ("ingly", "edly", "ing", "ies", "ied", "ed", "es", "ly", "s")
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves tell know please say said""".split()  # noqa: SIM905 (a word list reads better)
)


def pieces(text: str) -> list[str]:
    """Word pieces with their leading whitespace; joining them gives back the text (minus trailing space)."""
    return _PIECE.findall(text)


def count_pieces(text: str) -> int:
    return sum(1 for _ in _PIECE.finditer(text))


def stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> frozenset[str]:
    words = (w.lower() for w in _WORD.findall(text))
    return frozenset(stem(w) for w in words if w not in STOPWORDS)


@dataclass(frozen=True)
class Passage:
    number: int
    title: str
    text: str


@dataclass(frozen=True)
class Candidate:
    sentence: str
    source: str  # "passage" | "user" | "assistant"
    number: int = 0  # the passage number when source == "passage"
    title: str = ""


def parse_passages(system: str) -> list[Passage]:
    """The passage blocks after the `Context passages:` line of a system message. A block runs to the
    next unquoted `[n] <title>` line, so a passage may itself hold blank lines (paragraphs); its
    quoted lines (`> text`) are text whatever they say."""
    lines = system.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == CONTEXT_MARKER)
    except StopIteration:
        return []
    passages: list[Passage] = []
    number, title, body = 0, "", list[str]()
    for line in [*lines[start + 1:], "[0] end"]:
        if line.startswith(">"):
            if number:
                body.append(line[2:] if line.startswith("> ") else line[1:])
            continue
        header = _PASSAGE_HEADER.match(line.strip())
        if header:
            if number:
                passages.append(Passage(number, title, "\n".join(body).strip()))
            number, title, body = int(header.group(1)), header.group(2).strip(), []
        elif number:
            body.append(line.strip())
    return passages


def sentences(text: str) -> list[str]:
    # Hard line wraps (PDF text) are spaces inside a sentence.
    return [" ".join(s.split()) for s in _SENTENCE_END.split(text) if s and s.strip()]


def candidates(messages: list[dict[str, str]]) -> list[Candidate]:
    found: list[Candidate] = []
    for message in messages:
        if message.get("role") == "system":
            for passage in parse_passages(message.get("content", "")):
                # A quoted "[3]" would read as a citation of passage 3: quotes show it as "(3)".
                found.extend(
                    Candidate(_CITATION.sub(r"(\1)", s), "passage", passage.number, passage.title)
                    for s in sentences(passage.text)
                )
    last_user = last_user_index(messages)
    for index, message in enumerate(messages):
        role = message.get("role", "")
        if role in ("user", "assistant") and index != last_user:
            found.extend(Candidate(s, role) for s in sentences(message.get("content", "")))
    return found


def last_user_index(messages: list[dict[str, str]]) -> int:
    return max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)


def _render(group: list[Candidate]) -> str:
    """One citation for a run of sentences from the same source."""
    first = group[0]
    text = " ".join(c.sentence for c in group)
    if first.source == "user":
        return f"Earlier you said: {text}"
    if first.source == "assistant":
        return f"As I said before: {text}"
    head, _, rest = text.partition(" ")
    # Lower-case a leading function word so that the quote reads as one sentence; names keep capitals.
    if head.lower() in STOPWORDS and rest:
        text = head.lower() + " " + rest
    return f"According to [{first.number}], {text}"


def compose_answer(messages: list[dict[str, str]]) -> str:
    """The full answer text for a conversation (before max_tokens and stop sequences)."""
    last_user = last_user_index(messages)
    question = messages[last_user].get("content", "").strip() if last_user >= 0 else ""
    wanted = content_words(question)
    scored: list[tuple[int, int, int, Candidate]] = []
    for order, candidate in enumerate(candidates(messages)):
        own = len(wanted & content_words(candidate.sentence))
        # A passage's title stands in for the pronouns of its sentences ("It was built in 1889").
        with_title = len(wanted & (content_words(candidate.sentence) | content_words(candidate.title)))
        if own or with_title:
            scored.append((with_title, own, order, candidate))
    if not scored:
        restated = " ".join(question.split()) or "(an empty message)"
        return f"{NOTHING_FOUND} You asked: {restated}"
    scored.sort(key=lambda item: (-item[0], -item[1], item[2]))
    floor = max(1, math.ceil(scored[0][0] * 2 / 3))
    chosen: list[tuple[int, Candidate]] = []
    for with_title, _, order, candidate in scored:
        if with_title >= floor and all(c.sentence != candidate.sentence for _, c in chosen):
            chosen.append((order, candidate))
        if len(chosen) == MAX_QUOTED:
            break
    chosen.sort(key=lambda item: item[0])  # quote in reading order
    groups: list[list[Candidate]] = []
    for _, candidate in chosen:
        previous = groups[-1][0] if groups else None
        if previous and (previous.source, previous.number) == (candidate.source, candidate.number):
            groups[-1].append(candidate)
        else:
            groups.append([candidate])
    return " ".join(_render(group) for group in groups)


def apply_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut `text` before the earliest stop sequence; True when one was found."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class ExtractiveBackend:
    """Deterministic, weightless backend. `token_rate` paces the stream (tokens per second, 0 = no
    pause beyond yielding to other streams); `fail_after` injects a failure after that many tokens,
    for testing how failures mid-stream surface, and `stall_after` a silence of `stall_s` seconds
    (the connection kept open, as a hung model keeps it); `adapters` names the adapters accepted (they do not
    change the answer: there are no weights to adapt)."""

    name = "extractive"

    def __init__(
        self,
        token_rate: float = 0.0,
        fail_after: int | None = None,
        adapters: Mapping[str, str] | None = None,
        stall_after: int | None = None,
        stall_s: float = 0.0,
    ) -> None:
        if token_rate < 0:
            raise BackendError("token_rate must be zero or positive", status=400)
        self.token_rate = token_rate
        self.fail_after = fail_after
        self.stall_after = stall_after
        self.stall_s = stall_s
        self.adapters = dict(adapters or {})

    def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None

    async def generate(self, request: ChatRequest) -> AsyncIterator[TokenEvent]:
        if request.adapter is not None and request.adapter not in self.adapters:
            raise BackendError(f"adapter {request.adapter!r} is not loaded", status=400)
        prompt_tokens = sum(count_pieces(m.get("content", "")) for m in request.messages)
        text, _ = apply_stop(compose_answer(request.messages), request.stop)
        out = pieces(text)
        finish = "stop"
        if len(out) > request.max_tokens:
            out, finish = out[: request.max_tokens], "length"
        pause = 1.0 / self.token_rate if self.token_rate else 0.0
        if not out:
            yield TokenEvent("", finish, prompt_tokens, 0)
            return
        for index, piece in enumerate(out, start=1):
            if self.fail_after is not None and index > self.fail_after:
                raise BackendError(f"injected failure after {self.fail_after} tokens")
            if index - 1 == self.stall_after:
                await asyncio.sleep(self.stall_s)
            # Sleeping (even 0 s) hands the loop to the other streams, so concurrent requests interleave.
            await asyncio.sleep(pause)
            if index < len(out):
                yield TokenEvent(piece)
            else:
                yield TokenEvent(piece, finish, prompt_tokens, index)
