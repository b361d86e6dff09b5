"""The embedding endpoint's profile: Hugging Face Text Embeddings Inference (TEI) on SageMaker.

Retrieval in the cloud embeds queries (worker) and chunks (REST ingestion) through one SageMaker
real-time endpoint per region. The profile says which model, on which instance, with which TEI
settings, and resolves the TEI image offline from the sagemaker SDK's image-URI tables
(``huggingface-tei-cpu`` for CPU instances, ``huggingface-tei`` for GPU instances).

The vector stores are built for ``DIMENSION`` (384, all-MiniLM-L6-v2): a profile with other
dimensions is refused here, because changing it means changing the index mapping, the pgvector
column and ``lambdas.rag.embeddings.DIMENSION`` together.

TEI settings are the router's environment variables (``text-embeddings-router --help``): the
SageMaker image's entrypoint turns ``HF_MODEL_ID`` / ``HF_MODEL_REVISION`` into ``MODEL_ID`` /
``REVISION``; ``MAX_CLIENT_BATCH_SIZE`` (default 32) caps the inputs of one request and must be at
least the embedder's batch size; ``MAX_BATCH_TOKENS`` (default 16384) is the server-side batch.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sagemaker_containers.profiles.catalog import CATALOG, InstanceType, PriceConfidence
from sagemaker_containers.profiles.errors import ProfileError

# The store's vector width; lambdas.rag.embeddings.DIMENSION and the index mappings use the same number.
STORE_DIMENSIONS = 384
# lambdas.rag.embeddings.SageMakerEmbedder sends at most this many texts per request.
EMBEDDER_BATCH_SIZE = 32
# The newest TEI release in the sagemaker SDK's huggingface-tei(-cpu) tables (sagemaker 3.27.0).
DEFAULT_TEI_VERSION = "1.8.2"
TEI_GPU_FRAMEWORK = "huggingface-tei"
TEI_CPU_FRAMEWORK = "huggingface-tei-cpu"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"

_NAME = r"^[a-z0-9][a-z0-9.-]{0,62}$"
_RECALLED = "[U] AWS SageMaker pricing page (real-time hosting, us-east-1) as recalled; verify"


class CpuInstance(BaseModel):
    """A CPU hosting instance for the embedding endpoint. ``local_nvme`` instances (the `d` sizes) keep
    the model on instance storage, for which SageMaker refuses a volume KMS key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    vcpus: int = Field(ge=1)
    memory_gib: float = Field(gt=0)
    local_nvme: bool = False
    price_per_hour_usd: float | None
    price_source: str
    price_date: str
    price_confidence: PriceConfidence


def _cpu(name: str, vcpus: int, memory: float, price: float | None, source: str, date: str) -> CpuInstance:
    confidence: PriceConfidence = "none" if price is None else ("S" if source.startswith("[S]") else "U")
    return CpuInstance(
        name=name,
        vcpus=vcpus,
        memory_gib=memory,
        price_per_hour_usd=price,
        price_source=source,
        price_date=date,
        price_confidence=confidence,
    )


CPU_CATALOG: dict[str, CpuInstance] = {
    row.name: row
    for row in (
        _cpu("ml.c6i.large", 2, 4, 0.102, _RECALLED, "undated"),
        _cpu("ml.c6i.xlarge", 4, 8, 0.204, _RECALLED, "undated"),
        _cpu("ml.c6i.2xlarge", 8, 16, 0.408, _RECALLED, "undated"),
        _cpu("ml.c6i.4xlarge", 16, 32, 0.816, _RECALLED, "undated"),
        _cpu("ml.c7i.xlarge", 4, 8, None, "no price in the sources consulted", "n/a"),
        _cpu(
            "ml.m5.xlarge",
            4,
            16,
            0.269,
            "[S] zircon.tech 'The real cost of running AI models on AWS SageMaker', us-east-1",
            "2025-10",
        ),
    )
}


class EmbeddingProfile(BaseModel):
    """One deployable embedding endpoint: model, instance, TEI settings, scaling and price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME)
    description: str = ""
    model_id: str = Field(default=MINILM, min_length=1, description="Hugging Face id of the model")
    revision: str | None = Field(default=None, description="HF revision (commit) to pin")
    dimensions: int = Field(default=STORE_DIMENSIONS, ge=1)
    instance_type: str = "ml.c6i.xlarge"
    instance_count: int = Field(default=1, ge=1, description="instances at deploy time")
    min_instances: int = Field(default=1, ge=1)
    max_instances: int = Field(default=2, ge=1)
    # Target tracking on SageMakerVariantInvocationsPerInstance (requests per minute per instance).
    target_invocations_per_instance: int = Field(default=1200, ge=1)
    tei_version: str = DEFAULT_TEI_VERSION
    image_uri_override: str | None = None
    max_batch_tokens: int = Field(default=16384, ge=512)
    max_client_batch_size: int = Field(default=EMBEDDER_BATCH_SIZE, ge=1)
    max_concurrent_requests: int = Field(default=512, ge=1)
    container_startup_timeout_s: int = Field(default=600, ge=60, le=3600)
    model_data_download_timeout_s: int = Field(default=600, ge=60, le=3600)
    price_per_hour_override_usd: float | None = Field(default=None, ge=0)

    # ---- instance --------------------------------------------------------------------------------
    @property
    def gpu_instance(self) -> InstanceType | None:
        """The GPU catalog row when the profile runs on a GPU instance, else None."""
        return CATALOG.get(self.instance_type) if self.instance_type != "local" else None

    @property
    def cpu_instance(self) -> CpuInstance | None:
        return CPU_CATALOG.get(self.instance_type)

    @property
    def uses_gpu(self) -> bool:
        return self.gpu_instance is not None

    @property
    def has_instance_storage(self) -> bool:
        """True where the model sits on local NVMe (every GPU family here, CPU `d` sizes): no volume key."""
        if self.uses_gpu:
            return True
        cpu = self.cpu_instance
        return cpu is not None and cpu.local_nvme

    @property
    def framework(self) -> str:
        return TEI_GPU_FRAMEWORK if self.uses_gpu else TEI_CPU_FRAMEWORK

    # ---- rendering -------------------------------------------------------------------------------
    def render_env(self) -> dict[str, str]:
        """The TEI container's environment, in a stable order."""
        env = {"HF_MODEL_ID": self.model_id}
        if self.revision:
            env["HF_MODEL_REVISION"] = self.revision
        env["MAX_BATCH_TOKENS"] = str(self.max_batch_tokens)
        env["MAX_CLIENT_BATCH_SIZE"] = str(self.max_client_batch_size)
        env["MAX_CONCURRENT_REQUESTS"] = str(self.max_concurrent_requests)
        # Requests already ask for truncation; this keeps a client that forgets from getting a 413.
        env["AUTO_TRUNCATE"] = "true"
        return env

    def image_uri(self, region: str) -> str:
        """The TEI image in ``region``: the override if set, else the SDK's offline table."""
        if self.image_uri_override:
            return self.image_uri_override
        return tei_image_uri(region, self.tei_version, gpu=self.uses_gpu)

    # ---- cost ------------------------------------------------------------------------------------
    @property
    def instance_price_per_hour_usd(self) -> float:
        """On-demand price of one instance: the override, else the catalog's sourced price."""
        if self.price_per_hour_override_usd is not None:
            return self.price_per_hour_override_usd
        gpu, cpu = self.gpu_instance, self.cpu_instance
        price = gpu.price_per_hour_usd if gpu else (cpu.price_per_hour_usd if cpu else None)
        if price is None:
            raise ProfileError(
                f"The catalog has no sourced price for {self.instance_type}; "
                f"set price_per_hour_override_usd in embedding profile '{self.name}'."
            )
        return price

    @property
    def idle_price_per_hour_usd(self) -> float:
        """What the endpoint bills with no traffic at all: min_instances x the instance price."""
        return self.instance_price_per_hour_usd * self.min_instances

    @property
    def price_confidence(self) -> PriceConfidence:
        if self.price_per_hour_override_usd is not None:
            return "V"
        gpu, cpu = self.gpu_instance, self.cpu_instance
        row = gpu or cpu
        return row.price_confidence if row is not None else "none"


def tei_image_uri(region: str, version: str, *, gpu: bool) -> str:
    """The SageMaker TEI image (GPU or CPU build) for ``version`` in ``region``, offline."""
    framework = TEI_GPU_FRAMEWORK if gpu else TEI_CPU_FRAMEWORK
    try:
        from sagemaker.core import image_uris
    except ImportError:
        raise ProfileError(
            "Resolving the TEI image URI needs the sagemaker SDK; install the cdk extra "
            "(pip install 'chatstack[cdk]') or set image_uri_override in the embedding profile."
        ) from None
    try:
        uri: str = image_uris.retrieve(framework=framework, region=region, version=version)
    except ValueError as error:
        reason = str(error).strip().split(". ")[0].rstrip(".").replace("\n", " ")
        raise ProfileError(
            f"The sagemaker SDK has no {framework} image for version '{version}' in region "
            f"'{region}' ({reason})."
        ) from None
    return uri


def validate_embedding_profile(
    profile: EmbeddingProfile, *, store_dimensions: int = STORE_DIMENSIONS
) -> None:
    """Raise ProfileError (one sentence) if the profile cannot serve this deployment's vector store."""
    if profile.dimensions != store_dimensions:
        raise ProfileError(
            f"Embedding profile '{profile.name}' makes {profile.dimensions}-dimension vectors but the "
            f"vector store holds {store_dimensions}; change the index mapping, the pgvector column and "
            "lambdas.rag.embeddings.DIMENSION together, or pick a 384-dimension model."
        )
    if profile.instance_type not in CPU_CATALOG and profile.gpu_instance is None:
        raise ProfileError(
            f"Unknown instance type '{profile.instance_type}' for embedding profile '{profile.name}'; "
            f"use a CPU instance ({', '.join(CPU_CATALOG)}) or a GPU instance from the catalog."
        )
    if profile.min_instances > profile.max_instances:
        raise ProfileError(
            f"Embedding profile '{profile.name}' has min_instances {profile.min_instances} "
            f"above max_instances {profile.max_instances}."
        )
    if not profile.min_instances <= profile.instance_count <= profile.max_instances:
        raise ProfileError(
            f"Embedding profile '{profile.name}' starts {profile.instance_count} instances, outside "
            f"min_instances {profile.min_instances} to max_instances {profile.max_instances}."
        )
    if profile.max_client_batch_size < EMBEDDER_BATCH_SIZE:
        raise ProfileError(
            f"Embedding profile '{profile.name}' sets max_client_batch_size "
            f"{profile.max_client_batch_size}, below the {EMBEDDER_BATCH_SIZE} texts the embedder "
            "sends per request, so TEI would refuse full batches."
        )


_READY: tuple[EmbeddingProfile, ...] = (
    EmbeddingProfile(
        name="minilm-l6-v2-cpu",
        description="all-MiniLM-L6-v2 (384 dimensions) on TEI's CPU build; the model the local "
        "runtime ships, so local and cloud indexes agree.",
        model_id=MINILM,
        instance_type="ml.c6i.xlarge",
        instance_count=1,
        min_instances=1,
        max_instances=4,
    ),
    EmbeddingProfile(
        name="minilm-l6-v2-gpu",
        description="The same model on one A10G, for ingestion-heavy deployments.",
        model_id=MINILM,
        instance_type="ml.g5.xlarge",
        instance_count=1,
        min_instances=1,
        max_instances=2,
        max_batch_tokens=65536,
        target_invocations_per_instance=6000,
    ),
)

_BY_NAME = {profile.name: profile for profile in _READY}
DEFAULT_EMBEDDING_PROFILE = "minilm-l6-v2-cpu"


def get_embedding_profile(name: str) -> EmbeddingProfile:
    """The ready embedding profile called ``name``; ProfileError naming the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ProfileError(f"Unknown embedding profile '{name}'; known: {', '.join(_BY_NAME)}.") from None


def list_embedding_profiles() -> list[EmbeddingProfile]:
    return list(_READY)
