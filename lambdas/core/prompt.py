"""Prompt building within the model's token budget. Pure functions: no I/O.

The prompt is: one system message (instructions, then the retrieved context block), the most recent
turns that fit, and the new user message. The oldest turns are dropped first; the new message and
the system instructions are never dropped (a message too large for the budget is refused earlier).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lambdas.core.tokens import estimate_tokens
from lambdas.errors import TooLarge

Turn = dict[str, str]  # {"role": "user" | "assistant", "content": str}
PER_MESSAGE_OVERHEAD = 4  # role markers and separators in chat templates
PROMPT_JOINS = 8  # what joining the instructions and the context block may add to their estimates


@dataclass(frozen=True, slots=True)
class Prompt:
    messages: list[Turn]
    input_tokens: int
    dropped_turns: int


def answer_cap(requested: int | None, limit: int) -> int:
    """The most tokens an answer may have: what the request asks for (`maxTokens`), never above the
    deployment's limit."""
    return min(requested or limit, limit)


def room_left(
    *,
    system: str,
    user_text: str,
    max_context_tokens: int,
    max_output_tokens: int,
    count: Callable[[str], int] = estimate_tokens,
) -> int:
    """The tokens left for retrieved context and earlier turns once the system text and the new
    message are in. TooLarge when those two alone leave no room for the answer: dropping turns or
    context cannot help then, so sendMessage refuses such a message before storing it."""
    budget = max_context_tokens - max_output_tokens
    fixed = count(system) + count(user_text) + 2 * PER_MESSAGE_OVERHEAD
    if fixed > budget:
        raise TooLarge(
            f"The message needs about {fixed} tokens with the instructions; the model takes {budget} "
            f"besides the {max_output_tokens} it may answer with. Send a shorter message"
            + (" or ask for fewer maxTokens." if max_output_tokens > 1 else ".")
        )
    return budget - fixed


def build_prompt(
    *,
    system: str,
    context_block: str,
    history: Sequence[Turn],
    user_text: str,
    max_context_tokens: int,
    max_output_tokens: int,
    count: Callable[[str], int] = estimate_tokens,
) -> Prompt:
    system_text = f"{system}\n\n{context_block}".strip() if context_block else system
    budget = max_context_tokens - max_output_tokens
    used = budget - room_left(
        system=system_text,
        user_text=user_text,
        max_context_tokens=max_context_tokens,
        max_output_tokens=max_output_tokens,
        count=count,
    )
    kept: list[Turn] = []
    for turn in reversed(history):
        cost = count(turn["content"]) + PER_MESSAGE_OVERHEAD
        if used + cost > budget:
            break
        kept.append({"role": turn["role"], "content": turn["content"]})
        used += cost
    kept.reverse()
    # A chat must not start with an assistant turn whose question was dropped.
    while kept and kept[0]["role"] != "user":
        used -= count(kept[0]["content"]) + PER_MESSAGE_OVERHEAD
        kept.pop(0)
    messages = [{"role": "system", "content": system_text}, *kept, {"role": "user", "content": user_text}]
    return Prompt(messages=messages, input_tokens=used, dropped_turns=len(history) - len(kept))
