"""Ready model profiles, each sized so that validate_profile passes with the worst-case KV cache.

Gated checkpoints (the Meta Llama ones) cannot be pulled by the container without a token, and a token
must not sit in a plain environment variable: copy the weights to S3 and deploy
``get_profile(name).staged_at("s3://bucket/prefix/")``.
"""

from __future__ import annotations

from sagemaker_containers.profiles.errors import ProfileError
from sagemaker_containers.profiles.model import LoraConfig, ModelProfile, SpeculativeConfig

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"

_READY: tuple[ModelProfile, ...] = (
    ModelProfile(
        name="llama-3.1-8b-instruct",
        description="Llama 3.1 8B Instruct, BF16, one A10G; 2 instances so each AZ keeps one.",
        model_id=LLAMA_8B,
        architecture="llama-3.1-8b",
        # g5.2xlarge, not g5.xlarge: the same GPU, but 32 GiB of host memory to stage 16 GB of weights.
        instance_type="ml.g5.2xlarge",
        instance_count=2,
        min_instances=2,
        max_instances=6,
        tensor_parallel_degree=1,
        dtype="bf16",
        max_model_len=4096,
        max_batch_size=8,
    ),
    ModelProfile(
        name="llama-3.1-8b-instruct-awq",
        description="The same model as AWQ INT4 (pre-quantized): a third of the weights, 3x the KV room.",
        model_id="hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
        architecture="llama-3.1-8b",
        instance_type="ml.g5.xlarge",
        instance_count=2,
        min_instances=2,
        max_instances=8,
        tensor_parallel_degree=1,
        dtype="fp16",
        checkpoint_quantization="awq",
        max_model_len=8192,
        max_batch_size=12,
    ),
    ModelProfile(
        name="llama-3.3-70b-instruct-fp8",
        description=(
            "Llama 3.3 70B Instruct, FP8 checkpoint sharded over 8 A100s; A100 has no FP8 math, so vLLM "
            "runs FP8 weights with 16-bit activations (Marlin), still halving the bytes read per token."
        ),
        model_id="RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic",
        architecture="llama-3.1-70b",
        instance_type="ml.p4d.24xlarge",
        instance_count=1,
        min_instances=1,
        max_instances=2,
        tensor_parallel_degree=8,
        dtype="bf16",
        checkpoint_quantization="fp8",
        max_model_len=8192,
        max_batch_size=64,
        container_startup_timeout_s=3600,
        model_data_download_timeout_s=3600,
    ),
    ModelProfile(
        name="llama-3.1-8b-instruct-eagle3",
        description="Llama 3.1 8B with an EAGLE-3 draft head: lower latency at small batches.",
        model_id=LLAMA_8B,
        architecture="llama-3.1-8b",
        instance_type="ml.g5.2xlarge",
        instance_count=1,
        min_instances=1,
        max_instances=4,
        tensor_parallel_degree=1,
        dtype="bf16",
        # Speculation pays off while decode is bandwidth-bound; at large batches it costs throughput.
        max_model_len=4096,
        max_batch_size=4,
        speculative=SpeculativeConfig(
            method="eagle3",
            model="yuhuili/EAGLE3-LLaMA3.1-Instruct-8B",
            num_speculative_tokens=4,
            # One decoder layer plus fusion and draft-vocabulary head: roughly 0.85 GB in BF16.
            draft_parameters=430_000_000,
        ),
    ),
    ModelProfile(
        name="llama-3.1-8b-instruct-lora",
        description=(
            "Llama 3.1 8B with one LoRA adapter per tenant; the worker puts the tenant's adapter in the "
            "request's adapters field. LoRA runs one worker, so all 4 GPUs form one tensor-parallel group."
        ),
        model_id="s3://chatstack-models/llama-3.1-8b-instruct/",
        architecture="llama-3.1-8b",
        instance_type="ml.g5.12xlarge",
        instance_count=1,
        min_instances=1,
        max_instances=3,
        tensor_parallel_degree=4,
        dtype="bf16",
        max_model_len=8192,
        max_batch_size=32,
        lora=LoraConfig(
            adapters={
                "acme-support": "s3://chatstack-models/adapters/acme-support/",
                "globex-legal": "adapters/globex-legal",
            },
            tenant_adapters={"acme": "acme-support", "globex": "globex-legal"},
            max_lora_rank=16,
            max_loras=4,
            max_cpu_loras=8,
        ),
    ),
    ModelProfile(
        name="local-extractive",
        description="The local no-weights backend (chatstack up): answers by quoting retrieved passages.",
        model_id="extractive",
        instance_type="local",
        max_model_len=8192,
        max_batch_size=16,
    ),
)

_BY_NAME = {profile.name: profile for profile in _READY}


def get_profile(name: str) -> ModelProfile:
    """The ready profile called ``name``; ProfileError naming the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ProfileError(f"Unknown model profile '{name}'; known: {', '.join(_BY_NAME)}.") from None


def list_profiles() -> list[ModelProfile]:
    return list(_READY)
