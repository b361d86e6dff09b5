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


@dataclass(frozen=True, slots=True)
class Prompt:
    messages: list[Turn]
    input_tokens: int
    dropped_turns: int


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
    fixed = count(system_text) + count(user_text) + 2 * PER_MESSAGE_OVERHEAD
    if fixed > budget:
        raise TooLarge(
            f"The message needs about {fixed} tokens with its context; the model takes {budget} "
            f"besides the {max_output_tokens} it may answer with."
        )
    kept: list[Turn] = []
    used = fixed
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
