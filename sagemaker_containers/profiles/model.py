"""The typed, frozen model profile: everything needed to render an LMI (vLLM) container configuration,
check it against the instance, and price its output tokens.

The profile only describes; rendering lives in ``render.py``, the rules in ``validation.py`` and the
image lookup in ``images.py``. The methods here delegate so callers need one import.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sagemaker_containers.profiles.architectures import ModelShape, get_architecture
from sagemaker_containers.profiles.catalog import CATALOG, LOCAL_INSTANCE, InstanceType, get_instance
from sagemaker_containers.profiles.errors import ProfileError

# The newest LMI release in the sagemaker SDK's djl-lmi table (sagemaker 3.27.0: "latest" -> 0.38.0).
# Pinned here so a profile deploys the same container until someone changes it on purpose.
DEFAULT_CONTAINER_VERSION = "0.38.0"

Dtype = Literal["auto", "fp16", "bf16", "fp32"]
CheckpointQuantization = Literal["awq", "gptq", "fp8"]
RenderFormat = Literal["env", "properties"]
_NAME = r"^[a-z0-9][a-z0-9.-]{0,62}$"
_ADAPTER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SpeculativeConfig(_Frozen):
    """vLLM ``speculative_config``, passed through LMI as one JSON value (OPTION_SPECULATIVE_CONFIG)."""

    method: str = Field(description="eagle, eagle3, ngram, medusa, mlp_speculator, draft_model, mtp")
    model: str | None = Field(default=None, description="draft model or EAGLE head (HF id or S3 prefix)")
    num_speculative_tokens: int = Field(ge=1, le=16)
    draft_parameters: int = Field(
        default=0, ge=0, description="parameters of the draft model or head, for the memory estimate"
    )
    extra: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="further vLLM speculative_config keys, passed through"
    )

    def to_json(self) -> str:
        body: dict[str, Any] = {"method": self.method}
        if self.model:
            body["model"] = self.model
        body["num_speculative_tokens"] = self.num_speculative_tokens
        body.update(self.extra)
        return json.dumps(body, separators=(",", ":"))


class LoraConfig(_Frozen):
    """Multi-adapter LoRA. Each key is the adapter's name: the folder LMI loads it from
    (``<model prefix>/adapters/<name>/``) and the value of the request body's ``adapters`` field.
    Each value says where its PEFT files come from: an ``s3://`` URI that the deploy step copies to
    that folder, or the folder itself (``<name>`` or ``adapters/<name>``) when it is already there."""

    adapters: dict[str, str] = Field(min_length=1)
    tenant_adapters: dict[str, str] = Field(
        default_factory=dict, description="tenant id -> adapter name the chat request selects"
    )
    default_adapter: str | None = Field(default=None, description="adapter for tenants not listed")
    max_lora_rank: int = Field(default=16, ge=1, le=512)
    max_loras: int | None = Field(default=None, ge=1, description="adapters resident on GPU at once")
    max_cpu_loras: int | None = Field(default=None, ge=1)

    @property
    def resident_adapters(self) -> int:
        return self.max_loras if self.max_loras is not None else len(self.adapters)


class ModelProfile(_Frozen):
    """One deployable model configuration. Build it in code, from a JSON/YAML file, or pick a ready one."""

    name: str = Field(pattern=_NAME)
    description: str = ""
    model_id: str = Field(min_length=1, description="Hugging Face id or s3:// prefix of the weights")
    revision: str | None = Field(default=None, description="HF revision (commit) to pin")
    architecture: str | ModelShape | None = Field(
        default=None, description="a known architecture name or an inline shape (memory estimate)"
    )
    instance_type: str
    instance_count: int = Field(default=1, ge=1, description="instances at deploy time")
    tensor_parallel_degree: int = Field(default=1, ge=1)
    dtype: Dtype = "bf16"
    quantization: str | None = Field(
        default=None, description="runtime quantization (OPTION_QUANTIZE): fp8 or bitsandbytes"
    )
    checkpoint_quantization: CheckpointQuantization | None = Field(
        default=None, description="the checkpoint is already quantized (vLLM detects it; never rendered)"
    )
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    speculative: SpeculativeConfig | None = None
    lora: LoraConfig | None = None
    enable_prefix_caching: bool = True
    attention_backend: str | None = Field(default=None, description="vLLM attention backend, e.g. FLASHINFER")
    max_model_len: int = Field(ge=1)
    # Required on purpose: LMI's default is 256 in rolling-batch mode but 32 in async mode.
    max_batch_size: int = Field(ge=1)
    job_queue_size: int | None = Field(
        default=None, ge=1, description="requests LMI queues; default 2 x max_batch_size"
    )
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    extra_options: dict[str, str] = Field(
        default_factory=dict, description="further vLLM engine args as option name -> value"
    )
    container_version: str = DEFAULT_CONTAINER_VERSION
    image_uri_override: str | None = None
    container_startup_timeout_s: int = Field(default=1800, ge=60, le=3600)
    model_data_download_timeout_s: int = Field(default=1200, ge=60, le=3600)
    use_inference_components: bool = False
    min_instances: int = Field(default=1, ge=0)
    max_instances: int = Field(default=1, ge=1)
    target_concurrency_per_instance: int = Field(default=1, ge=1)
    throughput_tokens_per_s: float | None = Field(
        default=None, gt=0, description="output tokens/s per instance at max_batch_size (measured)"
    )
    price_per_hour_override_usd: float | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        # Defaults that depend on other fields; filled before validation so the model stays frozen.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        count = data.get("instance_count", 1)
        if "max_instances" not in data and isinstance(count, int):
            data["max_instances"] = max(count, int(data.get("min_instances", 1) or 1))
        batch = data.get("max_batch_size")
        if "target_concurrency_per_instance" not in data and isinstance(batch, int) and batch > 0:
            data["target_concurrency_per_instance"] = batch * _workers_hint(data)
        return data

    # ---- catalog and shape ------------------------------------------------------------------------
    @property
    def instance(self) -> InstanceType:
        return get_instance(self.instance_type)

    @property
    def resource_name(self) -> str:
        """The name with dots turned into hyphens: SageMaker resource names allow neither dots nor '_'."""
        return self.name.replace(".", "-")

    @property
    def is_local(self) -> bool:
        return self.instance_type == LOCAL_INSTANCE

    @property
    def shape(self) -> ModelShape:
        if self.architecture is None:
            raise ProfileError(
                f"Profile '{self.name}' needs an architecture (a known name or an inline shape) "
                "for the memory estimate."
            )
        if isinstance(self.architecture, ModelShape):
            return self.architecture
        return get_architecture(self.architecture)

    @property
    def workers_per_instance(self) -> int:
        """Model copies LMI starts per instance: GPUs / tensor-parallel degree (LoRA forces one)."""
        if self.is_local or self.lora is not None:
            return 1
        return max(1, self.instance.gpus // self.tensor_parallel_degree)

    @property
    def job_queue(self) -> int:
        return self.job_queue_size if self.job_queue_size is not None else 2 * self.max_batch_size

    # ---- rendering -------------------------------------------------------------------------------
    def render_env(self) -> dict[str, str]:
        from sagemaker_containers.profiles.render import render_env

        return render_env(self)

    def render_properties(self) -> str:
        from sagemaker_containers.profiles.render import render_properties

        return render_properties(self)

    def render(self, fmt: RenderFormat = "env") -> dict[str, str] | str:
        """The container configuration in exactly one format: env vars or a serving.properties file."""
        if fmt == "env":
            return self.render_env()
        if fmt == "properties":
            return self.render_properties()
        raise ProfileError(f"Unknown render format '{fmt}'; use 'env' or 'properties'.")

    def image_uri(self, region: str) -> str:
        from sagemaker_containers.profiles.images import image_uri

        return image_uri(self, region)

    def staged_at(self, s3_prefix: str) -> ModelProfile:
        """A copy whose weights live at ``s3_prefix`` (where a deploy step staged them)."""
        prefix = s3_prefix if s3_prefix.endswith("/") else s3_prefix + "/"
        return self.model_copy(update={"model_id": prefix})

    # ---- adapters --------------------------------------------------------------------------------
    def adapter_for_tenant(self, tenant_id: str) -> str | None:
        """The adapter name a chat request for ``tenant_id`` puts in the body's ``adapters`` field."""
        if self.lora is None:
            return None
        return self.lora.tenant_adapters.get(tenant_id, self.lora.default_adapter)

    def tenant_adapters_setting(self) -> str:
        """``CHATSTACK_TENANT_ADAPTERS`` for the worker: ``tenant=adapter,...,*=default`` (empty
        without LoRA), so the worker sends each tenant's adapter as ``adapter_for_tenant`` says."""
        if self.lora is None:
            return ""
        pairs = [f"{tenant}={adapter}" for tenant, adapter in sorted(self.lora.tenant_adapters.items())]
        if self.lora.default_adapter:
            pairs.append(f"*={self.lora.default_adapter}")
        return ",".join(pairs)

    def adapter_sources(self) -> dict[str, str]:
        """Adapters a deploy step must copy: ``adapters/<name>/`` (relative to the model prefix) -> S3 URI."""
        if self.lora is None:
            return {}
        return {
            f"adapters/{name}/": source
            for name, source in self.lora.adapters.items()
            if source.startswith("s3://")
        }

    # ---- cost ------------------------------------------------------------------------------------
    @property
    def instance_price_per_hour_usd(self) -> float:
        """On-demand price of one instance: the override, else the catalog's sourced price."""
        if self.price_per_hour_override_usd is not None:
            return self.price_per_hour_override_usd
        price = self.instance.price_per_hour_usd
        if price is None:
            raise ProfileError(
                f"The catalog has no sourced price for {self.instance_type}; "
                f"set price_per_hour_override_usd in profile '{self.name}'."
            )
        return price

    @property
    def price_per_hour_usd(self) -> float:
        """Price of the initial fleet (instance price x instance_count)."""
        return self.instance_price_per_hour_usd * self.instance_count

    @property
    def output_tokens_per_s(self) -> float:
        """Per-instance output tokens/s: the measured figure if configured, else the roofline estimate."""
        if self.throughput_tokens_per_s is not None:
            return self.throughput_tokens_per_s
        from sagemaker_containers.profiles.validation import estimate_throughput

        return estimate_throughput(self)

    def cost_per_output_token_usd(self) -> float:
        """Price per hour / (3600 x output tokens/s), per instance, for a fully loaded instance."""
        price = self.instance_price_per_hour_usd
        if price == 0:
            return 0.0
        return price / (3600.0 * self.output_tokens_per_s)

    def cost_per_1k_output_tokens_usd(self) -> float:
        return self.cost_per_output_token_usd() * 1000.0


def _workers_hint(data: dict[str, Any]) -> int:
    # Used only for a default; the real rules run in validation.py with one-sentence errors.
    row = CATALOG.get(str(data.get("instance_type", "")))
    tp = data.get("tensor_parallel_degree", 1)
    if row is None or row.gpus == 0 or not isinstance(tp, int) or tp < 1 or data.get("lora"):
        return 1
    return max(1, row.gpus // tp)
