"""A deterministic token estimate for budgets when the model's tokenizer is not at hand.

Sub-word tokenizers give about 1.3 tokens per English word; we count word pieces and punctuation and
round up, which errs on the side of a shorter prompt rather than an overflowing one.
"""

from __future__ import annotations

import math
import re

_PIECE = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def estimate_tokens(text: str) -> int:
    if not text:
        return 0
    pieces = _PIECE.findall(text)
    long_words = sum(1 for p in pieces if len(p) > 8)
    return math.ceil(len(pieces) * 1.15 + long_words * 0.5)
