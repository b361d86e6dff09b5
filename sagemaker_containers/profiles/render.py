"""Render a profile to the LMI container's configuration: environment variables OR serving.properties.

Both formats come from one list of settings, so they can never disagree, and a deployment uses one of
them, never both (serving.properties would silently override the environment). The key mapping is
LMI's: ``option.<name>`` <-> ``OPTION_<NAME>``, keys without ``option.`` <-> ``SERVING_<NAME>``.

Always rendered, whatever the defaults: async mode (LMI's default since v17, stated so a container
upgrade cannot change it), the batch size (LMI defaults it to 256 in rolling-batch mode but 32 in
async mode) with a job queue at least that deep, and prefix caching on or off. Never rendered:
``lmi-dist`` (removed in LMI v15) and ``OPTION_QUANTIZE`` for a pre-quantized checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sagemaker_containers.profiles.errors import ProfileError

if TYPE_CHECKING:
    from sagemaker_containers.profiles.model import ModelProfile

ASYNC_ENTRYPOINT = "djl_python.lmi_vllm.vllm_async_service"


@dataclass(frozen=True)
class Setting:
    """One configuration value under its environment name and its serving.properties name.
    ``env`` is None for settings that exist only in serving.properties."""

    env: str | None
    prop: str
    value: str


def _option(name: str, value: str) -> Setting:
    return Setting(env=f"OPTION_{name.upper()}", prop=f"option.{name}", value=value)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def settings(profile: ModelProfile) -> list[Setting]:
    """The profile's container settings, in the order they are rendered."""
    if profile.is_local:
        raise ProfileError(
            f"Profile '{profile.name}' runs on the local backend and has no LMI container configuration."
        )
    out = [
        # Only serving.properties needs the engine; the environment path infers Python for vLLM.
        Setting(env=None, prop="engine", value="Python"),
        Setting(env="HF_MODEL_ID", prop="option.model_id", value=profile.model_id),
    ]
    if profile.revision:
        out.append(Setting(env="HF_REVISION", prop="option.revision", value=profile.revision))
    out += [
        _option("async_mode", "true"),
        _option("rolling_batch", "disable"),
        Setting(env="OPTION_ENTRYPOINT", prop="option.entryPoint", value=ASYNC_ENTRYPOINT),
        _option("tensor_parallel_degree", str(profile.tensor_parallel_degree)),
        _option("dtype", profile.dtype),
    ]
    if profile.quantization:
        out.append(_option("quantize", profile.quantization))
    if profile.kv_cache_dtype != "auto":
        out.append(_option("kv_cache_dtype", profile.kv_cache_dtype))
    out += [
        _option("max_model_len", str(profile.max_model_len)),
        _option("max_rolling_batch_size", str(profile.max_batch_size)),
        Setting(env="SERVING_JOB_QUEUE_SIZE", prop="job_queue_size", value=str(profile.job_queue)),
        _option("gpu_memory_utilization", f"{profile.gpu_memory_utilization:g}"),
        _option("enable_prefix_caching", _flag(profile.enable_prefix_caching)),
    ]
    if profile.attention_backend:
        out.append(_option("attention_backend", profile.attention_backend))
    if profile.speculative is not None:
        out.append(_option("speculative_config", profile.speculative.to_json()))
    if profile.lora is not None:
        out += [
            _option("enable_lora", "true"),
            _option("max_loras", str(profile.lora.resident_adapters)),
            _option("max_lora_rank", str(profile.lora.max_lora_rank)),
        ]
        if profile.lora.max_cpu_loras is not None:
            out.append(_option("max_cpu_loras", str(profile.lora.max_cpu_loras)))
    out.append(_option("model_loading_timeout", str(profile.container_startup_timeout_s)))
    out += [_option(name, value) for name, value in profile.extra_options.items()]
    return out


def render_env(profile: ModelProfile) -> dict[str, str]:
    """The container environment (SageMaker Model or inference component ``Environment``)."""
    return {s.env: s.value for s in settings(profile) if s.env is not None}


def _escape(value: str) -> str:
    # java.util.Properties treats a backslash as an escape and a line break as the end of the value.
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def render_properties(profile: ModelProfile) -> str:
    """A serving.properties file for the root of the model directory (then set no OPTION_* env)."""
    lines = [f"# serving.properties for model profile '{profile.name}' (rendered by chatstack)"]
    lines += [f"{s.prop}={_escape(s.value)}" for s in settings(profile)]
    return "\n".join(lines) + "\n"
