"""The rules a profile must pass before anything deploys, and the GPU memory estimate behind one of them.

``validate_profile`` stops at the first broken rule with a ProfileError of one sentence that names the
numbers involved, so `cdk synth` and `chatstack model check` fail before a GPU instance is paid for.

Memory estimate, per model copy (one tensor-parallel group):
- weights: parameters x bytes per parameter for the dtype, or for the quantized format (4-bit
  AWQ/GPTQ with a 16-bit scale and zero per group of 128 = 4.25 bits; FP8 = 8 bits), with the
  embedding and LM head kept in 16 bits as quantizers do; plus a speculative draft model/head and the
  resident LoRA slots (max_loras x rank x A+B sizes of every projection);
- KV cache: 2 (K and V) x layers x KV heads x head dim x bytes per element, per token, times
  max_batch_size x max_model_len: the worst case where every sequence in the batch is full;
- available: GPUs x (GPU memory x gpu_memory_utilization - a runtime reserve for activations, CUDA
  graphs and the NCCL/CUDA context).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sagemaker_containers.profiles.catalog import InstanceType
from sagemaker_containers.profiles.errors import ProfileError
from sagemaker_containers.profiles.model import ModelProfile
from sagemaker_containers.profiles.render import render_env

GIB = 1024**3
RUNTIME_RESERVE_BYTES_PER_GPU = 1 * GIB
RUNTIME_QUANTIZATION = ("fp8", "bitsandbytes")
ENV_VALUE_MAX_BYTES = 1024
MODEL_ENV_MAX_ENTRIES = 100
MODEL_ENV_MAX_TOTAL_BYTES = 32 * 1024
INFERENCE_COMPONENT_ENV_MAX_ENTRIES = 16
# Decode is memory-bandwidth bound; vLLM reaches roughly this share of the data-sheet peak.
ROOFLINE_EFFICIENCY = 0.6

_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_BITS_PER_WEIGHT = {"awq": 4.25, "gptq": 4.25, "fp8": 8.0, "bitsandbytes": 4.5}


@dataclass(frozen=True)
class MemoryEstimate:
    """GPU memory one model copy needs against what its GPUs offer, in bytes."""

    weights_bytes: int
    adapter_bytes: int
    kv_bytes_per_token: int
    kv_tokens: int
    kv_cache_bytes: int
    available_bytes: int

    @property
    def required_bytes(self) -> int:
        return self.weights_bytes + self.adapter_bytes + self.kv_cache_bytes

    @property
    def fits(self) -> bool:
        return self.required_bytes <= self.available_bytes

    def describe(self) -> str:
        extra = f" + adapters {_gib(self.adapter_bytes)}" if self.adapter_bytes else ""
        return (
            f"weights {_gib(self.weights_bytes)}{extra} + KV cache {_gib(self.kv_cache_bytes)} "
            f"({self.kv_tokens} tokens x {self.kv_bytes_per_token} bytes) = {_gib(self.required_bytes)} "
            f"of {_gib(self.available_bytes)} available"
        )


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def _element_bytes(profile: ModelProfile) -> int:
    # "auto" loads the checkpoint's own dtype; every architecture listed ships 16-bit weights.
    return 4 if profile.dtype == "fp32" else 2


def estimate_memory(profile: ModelProfile) -> MemoryEstimate:
    """The memory estimate for one model copy (see the module docstring for the formulas)."""
    shape, instance = profile.shape, profile.instance
    element = _element_bytes(profile)
    fmt = profile.checkpoint_quantization or profile.quantization
    if fmt in _BITS_PER_WEIGHT:
        embedding = shape.embedding_parameters
        weights = int((shape.parameters - embedding) * _BITS_PER_WEIGHT[fmt] / 8) + embedding * element
    else:
        weights = shape.parameters * element
    if profile.speculative is not None:
        weights += profile.speculative.draft_parameters * element
    adapters = 0
    if profile.lora is not None:
        lora = profile.lora
        adapters = lora.resident_adapters * lora.max_lora_rank * shape.lora_parameters_per_rank * element
    kv_element = 1 if profile.kv_cache_dtype == "fp8" else element
    tp = profile.tensor_parallel_degree
    # With more GPUs than KV heads, vLLM replicates heads so that every GPU holds at least one.
    kv_heads = max(shape.num_key_value_heads, tp)
    per_token = 2 * shape.num_hidden_layers * kv_heads * shape.head_dim * kv_element
    tokens = profile.max_batch_size * profile.max_model_len
    per_gpu = instance.gpu_memory_gib * GIB * profile.gpu_memory_utilization - RUNTIME_RESERVE_BYTES_PER_GPU
    return MemoryEstimate(
        weights_bytes=weights,
        adapter_bytes=adapters,
        kv_bytes_per_token=per_token,
        kv_tokens=tokens,
        kv_cache_bytes=per_token * tokens,
        available_bytes=int(tp * per_gpu),
    )


def estimate_throughput(profile: ModelProfile) -> float:
    """Roofline estimate of output tokens/s per instance at max_batch_size, for planning until
    `chatstack bench` measures it: each decode step reads the weights once plus the KV cache of
    the batch at half the maximum context, at ROOFLINE_EFFICIENCY of the GPUs' peak bandwidth.
    Speculative decoding is not credited, so its profiles are estimated conservatively."""
    instance = profile.instance
    if instance.gpu is None:
        raise ProfileError(f"Profile '{profile.name}' runs locally; configure throughput_tokens_per_s.")
    memory = estimate_memory(profile)
    step_bytes = memory.weights_bytes + memory.adapter_bytes + memory.kv_cache_bytes / 2
    bandwidth = profile.tensor_parallel_degree * instance.gpu.bandwidth_gb_s * 1e9 * ROOFLINE_EFFICIENCY
    return profile.max_batch_size * bandwidth / step_bytes * profile.workers_per_instance


def validate_profile(profile: ModelProfile) -> MemoryEstimate:
    """Check every rule; return the memory estimate, or raise ProfileError naming the first failure."""
    instance = profile.instance
    _check_fleet(profile)
    _check_batch(profile)
    if profile.is_local:
        return MemoryEstimate(0, 0, 0, 0, 0, 0)
    shape = profile.shape
    if profile.max_model_len > shape.max_position_embeddings:
        raise ProfileError(
            f"max_model_len {profile.max_model_len} exceeds the model's context of "
            f"{shape.max_position_embeddings} tokens."
        )
    _check_parallelism(profile, instance)
    _check_quantization(profile, instance)
    _check_lora(profile, instance)
    memory = estimate_memory(profile)
    if not memory.fits:
        raise ProfileError(
            f"Profile '{profile.name}' does not fit in GPU memory on {instance.name}: {memory.describe()}; "
            "lower max_batch_size or max_model_len, quantize, or use a larger instance."
        )
    _check_environment(profile)
    return memory


def _check_fleet(profile: ModelProfile) -> None:
    if not profile.min_instances <= profile.instance_count <= profile.max_instances:
        raise ProfileError(
            f"instance_count {profile.instance_count} must lie between min_instances "
            f"{profile.min_instances} and max_instances {profile.max_instances}."
        )
    if profile.min_instances == 0 and not profile.use_inference_components:
        raise ProfileError(
            "min_instances 0 (scale to zero) needs use_inference_components, because SageMaker scales "
            "only inference components to zero instances."
        )


def _check_batch(profile: ModelProfile) -> None:
    if profile.job_queue < profile.max_batch_size:
        raise ProfileError(
            f"job_queue_size {profile.job_queue} must be at least max_batch_size {profile.max_batch_size}, "
            "or LMI turns away requests its batch has room for."
        )


def _check_parallelism(profile: ModelProfile, instance: InstanceType) -> None:
    tp, gpus = profile.tensor_parallel_degree, instance.gpus
    if gpus % tp != 0:
        divisors = ", ".join(str(d) for d in range(1, gpus + 1) if gpus % d == 0)
        raise ProfileError(
            f"tensor_parallel_degree {tp} must divide the {gpus} GPUs of {instance.name} (use {divisors})."
        )


def _check_quantization(profile: ModelProfile, instance: InstanceType) -> None:
    runtime, checkpoint = profile.quantization, profile.checkpoint_quantization
    if runtime and checkpoint:
        raise ProfileError(
            f"The checkpoint is already quantized ({checkpoint.upper()}), so quantization must not be set: "
            "vLLM detects the format itself and picks its kernels."
        )
    if runtime and runtime not in RUNTIME_QUANTIZATION:
        raise ProfileError(
            f"Runtime quantization '{runtime}' is not supported by LMI (only fp8 and bitsandbytes); "
            "for AWQ or GPTQ load a pre-quantized checkpoint and set checkpoint_quantization instead."
        )


def _check_lora(profile: ModelProfile, instance: InstanceType) -> None:
    lora = profile.lora
    if lora is None:
        return
    if profile.tensor_parallel_degree != instance.gpus:
        raise ProfileError(
            f"LoRA forces LMI to run one worker per instance, so tensor_parallel_degree must equal the "
            f"{instance.gpus} GPUs of {instance.name} (got {profile.tensor_parallel_degree})."
        )
    if not profile.model_id.startswith("s3://"):
        raise ProfileError(
            "LoRA adapters load from the adapters/ folder next to the weights, so model_id must be an "
            f"s3:// prefix (got '{profile.model_id}')."
        )
    for name, source in lora.adapters.items():
        if not _ADAPTER_NAME.match(name):
            raise ProfileError(
                f"Adapter name '{name}' must be 1-64 letters, digits, '.', '_' or '-', since it names "
                "its folder and the request's adapters field."
            )
        if not source.startswith("s3://") and source.strip("/") not in (name, f"adapters/{name}"):
            raise ProfileError(
                f"Adapter '{name}' must come from an s3:// URI or the folder adapters/{name} "
                f"(got '{source}'), because LMI names each adapter after its folder."
            )
    for tenant, adapter in {**lora.tenant_adapters, "(default)": lora.default_adapter or ""}.items():
        if adapter and adapter not in lora.adapters:
            raise ProfileError(
                f"Tenant '{tenant}' selects adapter '{adapter}', which the profile does not list."
            )


def _check_environment(profile: ModelProfile) -> None:
    env = render_env(profile)
    for key, value in env.items():
        size = len(value.encode())
        if size >= ENV_VALUE_MAX_BYTES:
            raise ProfileError(f"{key} is {size} bytes; every environment value must be under 1024 bytes.")
    total = sum(len(k.encode()) + len(v.encode()) for k, v in env.items())
    if len(env) > MODEL_ENV_MAX_ENTRIES or total > MODEL_ENV_MAX_TOTAL_BYTES:
        raise ProfileError(
            f"The environment has {len(env)} entries and {total} bytes; a SageMaker model allows at most "
            f"{MODEL_ENV_MAX_ENTRIES} entries and {MODEL_ENV_MAX_TOTAL_BYTES} bytes."
        )
    if profile.use_inference_components and len(env) > INFERENCE_COMPONENT_ENV_MAX_ENTRIES:
        raise ProfileError(
            f"The environment has {len(env)} entries but an inference component allows at most "
            f"{INFERENCE_COMPONENT_ENV_MAX_ENTRIES}; drop extra_options or deploy without inference "
            "components."
        )
