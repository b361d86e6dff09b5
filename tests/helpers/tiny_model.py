"""A tiny randomly initialised Llama-style chat model (and LoRA adapters for it), built offline.

Two layers, hidden size 64, a ~320-token byte-level BPE vocabulary with a chat template: it loads
in well under a second, so every test can build its own instead of downloading one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from sagemaker_containers.server.backends.random_model import ModelShape, create_random_chat_model

TINY = ModelShape(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=320, max_positions=512)


def create_tiny_model(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny model and its tokenizer to `directory`; `from_pretrained(directory)` loads both."""
    return create_random_chat_model(directory, TINY, seed=seed)


def create_tiny_lora(model_dir: str | Path, directory: str | Path, seed: int) -> Path:
    """Write a LoRA adapter for the model in `model_dir` whose weights are random, not the usual
    zero-initialised B matrix, so that it really changes the model's answers."""
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, config)
    path = Path(directory)
    peft_model.save_pretrained(path)
    return path
