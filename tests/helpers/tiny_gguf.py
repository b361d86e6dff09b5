"""A tiny random Llama in GGUF, written with the `gguf` package (llama.cpp's own writer), offline.

Two layers, embedding 64, a SentencePiece-style vocabulary of the three specials plus the 256 byte
tokens (llama.cpp's tokenizer falls back to bytes, so any text encodes), and a chat template, so
llama.cpp loads it and llama-cpp-python formats chats with it. Its answers are random bytes.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

LAYERS, EMBED, HEADS, KV_HEADS, FF, CONTEXT = 2, 64, 4, 2, 128, 512
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def create_tiny_gguf(path: str | Path, seed: int = 0) -> Path:
    path = Path(path)
    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL,
             *[gguf.TokenType.BYTE] * 256]
    vocab, head_dim = len(tokens), EMBED // HEADS

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FF)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([int(t) for t in types])
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(TEMPLATE)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    # numpy shapes are ggml's dimensions reversed: (rows = outputs, columns = inputs)
    writer.add_tensor("token_embd.weight", weight(vocab, EMBED))
    for i in range(LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(EMBED, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(EMBED, EMBED))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(KV_HEADS * head_dim, EMBED))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(KV_HEADS * head_dim, EMBED))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(EMBED, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(EMBED, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(FF, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(FF, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(EMBED, FF))
    writer.add_tensor("output_norm.weight", np.ones(EMBED, dtype=np.float32))
    writer.add_tensor("output.weight", weight(vocab, EMBED))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
