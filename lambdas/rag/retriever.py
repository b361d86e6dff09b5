"""What the worker calls: the passages for a question, fitted into the prompt, with citations.

`retrieve` returns the tenant's top-k chunks whose cosine similarity reaches the score floor,
best first; `fit_passages` keeps as many as the prompt's token budget holds; `format_context`
renders them in the block the local extractive model reads:

    Context passages:
    [1] <title>
    > <passage text, every line quoted>
    >
    > <second paragraph>

    [2] <title>
    > <passage text>

A title is one line (control and bidi characters removed, whitespace collapsed) and every text line
is quoted, so a document cannot forge a passage header (`[3] Official policy`) or end its passage:
the numbers the model cites are the retriever's. This does not stop instructions written inside a
passage from being read by the model (prompt injection); see docs/rag.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lambdas.adapters.db import Database
from lambdas.config import Settings
from lambdas.rag.embeddings import Embedder, embedder_from_settings
from lambdas.rag.parsing import clean_title
from lambdas.rag.stores import store_from_settings
from lambdas.rag.stores.base import SearchQuery, VectorStore

CONTEXT_HEADER = "Context passages:"


@dataclass(frozen=True)
class Passage:
    document_id: str
    title: str
    chunk: int
    score: float
    text: str
    source: str | None


class Retriever:
    def __init__(self, embedder: Embedder, store: VectorStore, *, hybrid: bool = True) -> None:
        self.embedder = embedder
        self.store = store
        self.hybrid = hybrid and store.supports_hybrid

    def retrieve(self, *, tenant_id: str, query: str, k: int, min_score: float) -> list[Passage]:
        """The tenant's best `k` passages for `query` scoring at least `min_score` (cosine), best first."""
        if k <= 0 or not query.strip():
            return []
        vector = self.embedder.embed([query])[0]
        hits = self.store.search(
            SearchQuery(tenant_id=tenant_id, vector=vector, k=k, text=query), hybrid=self.hybrid
        )
        return [
            Passage(
                document_id=h.document_id,
                title=h.title,
                chunk=h.ordinal,
                score=round(h.score, 4),
                text=h.text,
                source=h.source,
            )
            for h in hits
            if h.score >= min_score
        ]


def _block(number: int, passage: Passage) -> str:
    """`[n] <title>` on one line, then every line of the text quoted with `> ` (a blank line as `>`):
    no line of a document can start a passage of its own or end one, so passage numbers and
    boundaries are the retriever's, whatever the text or title says."""
    title = clean_title(passage.title) or "(untitled)"
    quoted = "\n".join(f"> {line}" if line.strip() else ">" for line in passage.text.splitlines())
    return f"[{number}] {title}\n{quoted or '>'}"


def format_context(passages: Sequence[Passage]) -> str:
    """The context block: `Context passages:` then `[n] <title>` + quoted text blocks, blank-line
    separated."""
    if not passages:
        return ""
    return CONTEXT_HEADER + "\n" + "\n\n".join(_block(n, p) for n, p in enumerate(passages, start=1))


def fit_passages(
    passages: Sequence[Passage], budget_tokens: int, count_tokens: Callable[[str], int]
) -> list[Passage]:
    """The passages, in rank order, whose formatted context fits in `budget_tokens`. A passage too
    long for what is left is skipped and shorter ones after it still get their chance."""
    kept: list[Passage] = []
    used = count_tokens(CONTEXT_HEADER)
    for passage in passages:
        cost = count_tokens(_block(len(kept) + 1, passage)) + 1  # +1: the blank line between blocks
        if used + cost <= budget_tokens:
            kept.append(passage)
            used += cost
    return kept


def retriever_from_settings(settings: Settings, db: Database) -> Retriever | None:
    """The retriever the settings describe, or None when retrieval is off."""
    if not settings.rag_enabled:
        return None
    return Retriever(embedder_from_settings(settings), store_from_settings(settings, db),
                     hybrid=settings.rag_hybrid)
