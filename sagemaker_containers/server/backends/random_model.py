"""A randomly initialised Llama-style chat model written to a directory, for tests and benchmarks.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on a few sentences here, the model
is `LlamaForCausalLM` from a `LlamaConfig` with random weights. Both are saved with `save_pretrained`,
so `AutoTokenizer` / `AutoModelForCausalLM.from_pretrained(directory)` load them offline like any
Hugging Face model directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<|pad|>", "<|begin|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>")

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "A chat service streams answers token by token to many users at once.",
    "Caches keep the keys and values of every past token so each step only computes one more.",
    "Requests that arrive together share one forward pass through the model.",
    "Où est la gare ? Ça coûte trop cher, señor. Grüße aus Köln! 東京 🙂",
    "Regions fail over, queues buffer bursts, and the worker writes every delta.",
)


@dataclass(frozen=True)
class ModelShape:
    """The size of the random model; the defaults load and run in well under a second on a CPU."""

    layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    vocab: int = 320
    max_positions: int = 1024
    # Larger than Llama's 0.02 so that greedy answers vary with the prompt instead of repeating one token.
    init_std: float = 0.2


def build_tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (every UTF-8 string encodes; some characters span several tokens)."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(_CORPUS),
        vocab_size=vocab,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe._tokenizer,
        bos_token="<|begin|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        additional_special_tokens=list(SPECIAL_TOKENS[3:]),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def create_random_chat_model(directory: str | Path, shape: ModelShape = ModelShape(), seed: int = 0) -> Path:
    """Write a random Llama-style chat model and its tokenizer to `directory` and return its path.

    The output row of the end-of-turn token is zeroed, so greedy decoding of a random model (whose
    other logits spread both ways around zero) practically never ends a reply early: benchmarks and
    tests get answers of exactly `max_tokens` tokens unless they configure another stop token.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(shape.vocab)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_positions,
        initializer_range=shape.init_std,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()  # type: ignore[no-untyped-call]
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
