"""SageMaker GPU instance catalog: GPUs per instance, GPU memory and bandwidth, on-demand price per hour.

Prices are us-east-1 real-time hosting, on-demand, per instance-hour. No official price file was
reachable where this table was written, so every price carries its source, the date of that source
and a confidence mark, and feeds cost *estimates* only (finance reads billed cost from CUR):

- ``S``: a secondary source (a third-party article quoting the AWS price page), named and dated.
- ``U``: unverified, a recollection of the AWS SageMaker pricing page; check before relying on it.
- ``none``: no price found in the sources consulted; a profile on such an instance must set
  ``price_per_hour_override_usd`` before anything computes a cost from it.

The authoritative path is the AWS Price List API (``pricing`` client in us-east-1, ServiceCode
``AmazonSageMaker``, usagetype ``USE1-Host:<instance>``) or the CUR column
``pricing_public_on_demand_rate``.

GPU memory is what CUDA reports (nvidia-smi "total"), a little below the marketed size, because the
memory-fit check must not count memory the driver keeps. Bandwidths are NVIDIA data-sheet peaks.
Both are [U] in this project's fact sheet: recalled specifications, not measured here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sagemaker_containers.profiles.errors import ProfileError

PriceConfidence = Literal["V", "S", "U", "none"]
LOCAL_INSTANCE = "local"


class Gpu(BaseModel):
    """One GPU model: memory visible to CUDA and peak memory bandwidth."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    memory_gib: float
    bandwidth_gb_s: float
    supports_fp8: bool


A10G = Gpu(model="NVIDIA A10G", memory_gib=22.49, bandwidth_gb_s=600, supports_fp8=False)
L4 = Gpu(model="NVIDIA L4", memory_gib=22.49, bandwidth_gb_s=300, supports_fp8=True)
L40S = Gpu(model="NVIDIA L40S", memory_gib=44.99, bandwidth_gb_s=864, supports_fp8=True)
A100_40GB = Gpu(model="NVIDIA A100 40GB", memory_gib=40.0, bandwidth_gb_s=1555, supports_fp8=False)
H100_80GB = Gpu(model="NVIDIA H100 80GB", memory_gib=79.65, bandwidth_gb_s=3350, supports_fp8=True)


class InstanceType(BaseModel):
    """One catalog row. ``price_per_hour_usd`` is None where no source gave a price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    gpus: int = Field(ge=0)
    gpu: Gpu | None
    price_per_hour_usd: float | None
    price_source: str
    price_date: str
    price_confidence: PriceConfidence

    @property
    def gpu_model(self) -> str:
        return self.gpu.model if self.gpu else "none"

    @property
    def gpu_memory_gib(self) -> float:
        """Memory of one GPU, GiB (0 for the local instance)."""
        return self.gpu.memory_gib if self.gpu else 0.0

    @property
    def total_gpu_memory_gib(self) -> float:
        return self.gpu_memory_gib * self.gpus


_WRING = "[S] wring.co 'SageMaker Inference: Real-Time vs Serverless', us-east-1"
_ZIRCON = "[S] zircon.tech 'The real cost of running AI models on AWS SageMaker', us-east-1"
_RECALLED = "[U] AWS SageMaker pricing page as recalled in the project fact sheet; verify"
_NONE = "no price in the sources consulted; set price_per_hour_override_usd"


def _row(name: str, gpus: int, gpu: Gpu, price: float | None, source: str, date: str) -> InstanceType:
    confidence: PriceConfidence = "none" if price is None else ("S" if source.startswith("[S]") else "U")
    return InstanceType(
        name=name,
        gpus=gpus,
        gpu=gpu,
        price_per_hour_usd=price,
        price_source=source,
        price_date=date,
        price_confidence=confidence,
    )


def _family(prefix: str, gpu: Gpu, prices: dict[str, tuple[float | None, str, str]]) -> list[InstanceType]:
    # g5, g6 and g6e share one layout: single-GPU sizes up to 16xlarge, 4 GPUs at 12x/24x, 8 at 48x.
    layout = {
        "xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1,
        "12xlarge": 4, "24xlarge": 4, "48xlarge": 8,
    }  # fmt: skip
    rows = []
    for size, gpus in layout.items():
        name = f"ml.{prefix}.{size}"
        price, source, date = prices.get(name, (None, _NONE, "n/a"))
        rows.append(_row(name, gpus, gpu, price, source, date))
    return rows


_ROWS: list[InstanceType] = [
    *_family(
        "g5",
        A10G,
        {
            "ml.g5.xlarge": (1.41, _ZIRCON + " (also [U] $1.408; wring.co 2026-03-15 says $1.21)", "2025-10"),
            "ml.g5.2xlarge": (1.52, _WRING + " (also [U] $1.515)", "2026-03-15"),
            "ml.g5.12xlarge": (7.09, _RECALLED, "undated"),
            "ml.g5.48xlarge": (20.36, _RECALLED, "undated"),
        },
    ),
    *_family(
        "g6",
        L4,
        {
            "ml.g6.xlarge": (1.01, _RECALLED, "undated"),
            "ml.g6.12xlarge": (5.75, _RECALLED, "undated"),
        },
    ),
    *_family("g6e", L40S, {}),
    _row("ml.p4d.24xlarge", 8, A100_40GB, 37.69, _WRING + " (also [U] $37.688)", "2026-03-15"),
    _row("ml.p5.48xlarge", 8, H100_80GB, 113.0, _RECALLED + " (2025 GPU price cuts may apply)", "undated"),
    InstanceType(
        name=LOCAL_INSTANCE,
        gpus=0,
        gpu=None,
        price_per_hour_usd=0.0,
        price_source="runs on your own machine",
        price_date="n/a",
        price_confidence="V",
    ),
]

CATALOG: dict[str, InstanceType] = {row.name: row for row in _ROWS}


def get_instance(name: str) -> InstanceType:
    """The catalog row for ``name``; one-sentence ProfileError for an unknown instance type."""
    try:
        return CATALOG[name]
    except KeyError:
        families = "ml.g5, ml.g6, ml.g6e, ml.p4d, ml.p5"
        raise ProfileError(
            f"Unknown instance type '{name}'; the catalog covers the {families} families and 'local'."
        ) from None


def list_instances() -> list[InstanceType]:
    return list(_ROWS)
