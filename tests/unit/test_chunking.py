"""Token-aware chunking: size bound, overlap, sentence-aligned borders, exact slices, and the
headroom under the embedding model's 256-WordPiece window (checked with its real tokenizer)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from lambdas.rag.chunking import DEFAULT_CHUNK_TOKENS, chunk_text, count_tokens

DATA = Path(__file__).resolve().parents[1] / "data" / "rag"
SENTENCES = " ".join(f"Sentence number {i} says something about topic {i % 7}." for i in range(120))


def test_count_tokens_counts_words_and_punctuation() -> None:
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("") == 0
    assert count_tokens("e-mail 3.5") == 6


def test_every_chunk_is_an_exact_slice_within_the_token_bound() -> None:
    chunks = chunk_text(SENTENCES, max_tokens=50, overlap=10)
    assert len(chunks) > 10
    for chunk in chunks:
        assert chunk.text in SENTENCES
        assert chunk.tokens == count_tokens(chunk.text) <= 50
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert chunks[0].text.startswith("Sentence number 0") and chunks[-1].text.endswith("topic 0.")


def test_chunks_end_and_start_at_sentence_borders_and_overlap() -> None:
    chunks = chunk_text(SENTENCES, max_tokens=50, overlap=12)
    for previous, current in itertools.pairwise(chunks):
        assert previous.text.endswith(".")
        assert current.text.startswith("Sentence number")
        # the next chunk begins inside the previous one: the overlap
        assert SENTENCES.index(current.text) < SENTENCES.index(previous.text) + len(previous.text)


def test_zero_overlap_tiles_the_text() -> None:
    chunks = chunk_text(SENTENCES, max_tokens=40, overlap=0)
    assert sum(c.tokens for c in chunks) == count_tokens(SENTENCES)


def test_a_long_run_without_sentence_breaks_is_cut_by_tokens() -> None:
    text = " ".join(["word"] * 1000)
    chunks = chunk_text(text, max_tokens=100, overlap=20)
    assert all(c.tokens <= 100 for c in chunks)
    assert chunks[1].tokens == 100 and len(chunks) == 13  # advances by 80 tokens


def test_paragraph_breaks_are_preferred_over_sentence_breaks() -> None:
    first = " ".join(["Alpha beta gamma."] * 10)  # 40 tokens
    text = first + "\n\n" + " ".join(["Delta epsilon zeta."] * 10)
    chunks = chunk_text(text, max_tokens=60, overlap=0)
    assert chunks[0].text == first


def test_empty_text_has_no_chunks_and_bad_sizes_are_refused() -> None:
    assert chunk_text("  \n ") == []
    with pytest.raises(ValueError):
        chunk_text("x", max_tokens=4)
    with pytest.raises(ValueError):
        chunk_text("x", max_tokens=20, overlap=10)


def test_default_chunks_of_the_shipped_corpus_fit_the_models_256_wordpiece_window() -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from lambdas.rag.embeddings import local_model_dir

    tokenizer = tokenizers.Tokenizer.from_file(str(local_model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    longest = 0
    for path in DATA.iterdir():
        if path.suffix in {".md", ".txt", ".html"}:
            for chunk in chunk_text(path.read_text(), max_tokens=DEFAULT_CHUNK_TOKENS):
                # the title line is embedded too: allow 20 pieces for it
                longest = max(longest, len(tokenizer.encode(chunk.text).ids) + 20)
    assert 0 < longest <= 256


def test_a_long_run_without_spaces_counts_by_its_length() -> None:
    """Was: one 320,000-character word was 1 token, so it became one chunk of 320,046 characters."""
    assert count_tokens("abcdefgh") == 1 and count_tokens("abcdefghi") == 2
    assert count_tokens("x" * 320_000) == 1 + (320_000 - 8) // 4
    text = "Intro. " + "q" * 320_000 + " Outro."
    chunks = chunk_text(text)
    assert all(c.tokens <= DEFAULT_CHUNK_TOKENS for c in chunks)
    assert all(len(c.text) <= 8 + 4 * DEFAULT_CHUNK_TOKENS for c in chunks)
    assert chunks[0].text.startswith("Intro.") and chunks[-1].text.endswith("Outro.")
    assert "".join(c.text for c in chunk_text(text, overlap=0)).replace(" ", "") == text.replace(" ", "")


def test_cjk_characters_count_one_each_and_chunks_end_at_full_stops() -> None:
    # 14 ideographs and an ideographic full stop
    clause = "\u6bcf\u4e2a\u5458\u5de5\u6bcf\u5e74\u6709\u4e8c\u5341\u5929\u5e26\u85aa\u5047\u671f\u3002"
    assert count_tokens(clause) == 15
    chunks = chunk_text(clause * 100)
    assert len(chunks) >= 10 and all(c.tokens <= DEFAULT_CHUNK_TOKENS for c in chunks)
    assert all(c.text.endswith("\u3002") for c in chunks)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param((DATA / "sourdough.md").read_text(), id="english"),
        pytest.param(
            "\u6bcf\u4e2a\u5458\u5de5\u6bcf\u5e74\u6709\u4e8c\u5341\u5929\u5e26\u85aa\u5047\u671f"
            "\uff0c\u9700\u63d0\u524d\u4e24\u5468\u7533\u8bf7\u3002" * 200,
            id="chinese",
        ),
        pytest.param(
            "\u3053\u308c\u306f\u65e5\u672c\u8a9e\u306e\u6587\u3067\u3059\u3002" * 300, id="japanese"
        ),
        pytest.param(
            " ".join(f"https://example.com/docs/section-{i}/page_{i * 7}.html?ref=a" for i in range(500)),
            id="urls",
        ),
        pytest.param("Q" * 50_000, id="one-long-word"),
    ],
)
def test_chunks_of_any_script_fit_the_models_256_wordpiece_window(text: str) -> None:
    """Was: Chinese chunks of 160 counted tokens were 1,042 WordPieces: 75% of each was never embedded."""
    tokenizers = pytest.importorskip("tokenizers")
    from lambdas.rag.embeddings import local_model_dir

    tokenizer = tokenizers.Tokenizer.from_file(str(local_model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    pieces = [len(tokenizer.encode(c.text).ids) for c in chunk_text(text, max_tokens=DEFAULT_CHUNK_TOKENS)]
    assert pieces and max(pieces) + 20 <= 256, max(pieces)  # 20 for the embedded title line


def test_chunks_of_long_words_start_and_end_between_words() -> None:
    """Counting a long word as several pieces (so that it cannot hide in one) let chunk borders fall
    inside words ("...responsibili" / "ities ..."); a border now falls between words unless one word
    fills a whole window."""
    words = ["responsibilities", "internationalization", "a", "data", "pneumonoultramicroscopic"]
    text = " ".join(words[(i * 7) % len(words)] for i in range(3000))
    at = 0
    chunks = chunk_text(text)
    assert len(chunks) > 10
    for chunk in chunks:
        start = text.index(chunk.text, max(0, at - len(chunk.text)))
        end = start + len(chunk.text)
        assert start == 0 or text[start - 1] == " ", chunk.text[:30]
        assert end == len(text) or text[end] == " ", chunk.text[-30:]
        at = end
    one_word = "x" * 5000  # longer than a window: it must still be cut
    assert len(chunk_text(one_word)) > 1
