"""The chat core without I/O: prompts within the token budget (delta pacing: test_deltas.py)."""

from __future__ import annotations

import pytest

from lambdas.core.prompt import build_prompt
from lambdas.core.tokens import estimate_tokens
from lambdas.errors import TooLarge


def test_prompt_drops_oldest_turns_first_and_keeps_the_new_message() -> None:
    history = []
    for i in range(30):
        history += [
            {"role": "user", "content": f"question {i} " * 20},
            {"role": "assistant", "content": f"answer {i} " * 20},
        ]
    p = build_prompt(
        system="sys",
        context_block="",
        history=history,
        user_text="latest?",
        max_context_tokens=600,
        max_output_tokens=100,
    )
    assert p.messages[0]["role"] == "system" and p.messages[-1] == {"role": "user", "content": "latest?"}
    assert p.dropped_turns > 0
    assert p.messages[1]["role"] == "user"
    assert "question 29" in p.messages[-3]["content"]  # the most recent turns survive
    assert p.input_tokens <= 500


def test_prompt_carries_context_block_in_the_system_message() -> None:
    p = build_prompt(
        system="sys",
        context_block="Context passages:\n[1] T\ntext",
        history=[],
        user_text="q",
        max_context_tokens=1000,
        max_output_tokens=10,
    )
    assert "Context passages:" in p.messages[0]["content"]


def test_message_too_large_for_the_model_is_refused() -> None:
    with pytest.raises(TooLarge):
        build_prompt(
            system="s",
            context_block="",
            history=[],
            user_text="word " * 5000,
            max_context_tokens=1000,
            max_output_tokens=100,
        )


def test_token_estimate_is_deterministic_and_monotonic() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("hello world") == estimate_tokens("hello world")
    assert estimate_tokens("hello world again") > estimate_tokens("hello world")


def test_estimate_tokens_is_bounded_by_length_for_long_words_and_cjk() -> None:
    """Was: a 320,000-character word estimated 2 tokens, so the whole passage went into the prompt."""
    assert estimate_tokens("x" * 320_000) >= 320_000 / 4
    assert estimate_tokens("\u6bcf\u4e2a\u5458\u5de5" * 250) >= 1000
    assert estimate_tokens("The quick brown fox jumps over the lazy dog.") <= 13
