"""A deterministic token estimate for budgets when the model's tokenizer is not at hand.

Pieces are what a BERT-style pre-tokenizer splits text into, bounded by length so that no run of
characters counts as one token however long it is:

- a word counts 1 up to 8 characters, then 1 more per 4 characters (a 320,000-character "word" is
  80,000 pieces, not 1): sub-word tokenizers split long and unknown words into short pieces;
- each CJK character (kana, ideographs, Hangul syllables) is a piece, as tokenizers treat them;
- each punctuation mark is a piece.

The estimate is pieces x 1.15 rounded up (sub-word tokenizers give about 1.3 tokens per English word,
counted here partly by the longer words' extra pieces), which errs on the side of a shorter prompt
rather than an overflowing one. `lambdas.rag.chunking` counts the same pieces.
"""

from __future__ import annotations

import math
import re

# Hiragana, katakana, CJK unified ideographs (with extension A and compatibility), Hangul syllables.
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD = f"[^\\W{CJK}]"
# A CJK character; the start of a word (up to 8 characters); the rest of a word, 4 at a time; a mark.
PIECE = re.compile(f"[{CJK}]|(?<!{_WORD}){_WORD}{{1,8}}|{_WORD}{{1,4}}|[^\\w\\s]")


def estimate_tokens(text: str) -> int:
    if not text:
        return 0
    return math.ceil(len(PIECE.findall(text)) * 1.15)
