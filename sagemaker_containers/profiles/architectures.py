"""Model shapes: the few numbers of a checkpoint's config.json that the memory estimate needs.

A profile names one of these (``architecture: llama-3.1-8b``) or writes its own shape inline, so a
new checkpoint needs no code change. Values are copied from each model's published config.json.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sagemaker_containers.profiles.errors import ProfileError


class ModelShape(BaseModel):
    """Transformer dimensions; field names follow the Hugging Face config.json where they exist."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    parameters: int = Field(gt=0, description="total parameter count of the unquantized model")
    num_hidden_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    max_position_embeddings: int = Field(gt=0)

    @property
    def embedding_parameters(self) -> int:
        """Input embedding plus LM head; quantized checkpoints keep these in 16 bits."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def lora_parameters_per_rank(self) -> int:
        """LoRA A+B parameters per unit of rank when every attention and MLP projection is adapted."""
        q_out = self.num_attention_heads * self.head_dim
        kv_out = self.num_key_value_heads * self.head_dim
        h, i = self.hidden_size, self.intermediate_size
        per_layer = (h + q_out) + 2 * (h + kv_out) + (q_out + h) + 2 * (h + i) + (i + h)
        return per_layer * self.num_hidden_layers


ARCHITECTURES: dict[str, ModelShape] = {
    # meta-llama/Llama-3.1-8B-Instruct (and its AWQ/FP8 derivatives)
    "llama-3.1-8b": ModelShape(
        parameters=8_030_261_248,
        num_hidden_layers=32,
        hidden_size=4096,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=14336,
        vocab_size=128256,
        max_position_embeddings=131072,
    ),
    # meta-llama/Llama-3.1-70B-Instruct and Llama-3.3-70B-Instruct share this shape
    "llama-3.1-70b": ModelShape(
        parameters=70_553_706_496,
        num_hidden_layers=80,
        hidden_size=8192,
        num_attention_heads=64,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=28672,
        vocab_size=128256,
        max_position_embeddings=131072,
    ),
    # Qwen/Qwen2.5-7B-Instruct
    "qwen2.5-7b": ModelShape(
        parameters=7_615_616_512,
        num_hidden_layers=28,
        hidden_size=3584,
        num_attention_heads=28,
        num_key_value_heads=4,
        head_dim=128,
        intermediate_size=18944,
        vocab_size=152064,
        max_position_embeddings=32768,
    ),
    # mistralai/Mistral-7B-Instruct-v0.3
    "mistral-7b": ModelShape(
        parameters=7_248_023_552,
        num_hidden_layers=32,
        hidden_size=4096,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=14336,
        vocab_size=32768,
        max_position_embeddings=32768,
    ),
}


def get_architecture(name: str) -> ModelShape:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ProfileError(
            f"Unknown architecture '{name}'; known: {known} (or write the shape inline in the profile)."
        ) from None
