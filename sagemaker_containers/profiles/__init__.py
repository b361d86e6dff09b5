"""Typed LMI model profiles: the instance catalog, the memory-fit and limit checks, rendering to the
LMI container's environment or serving.properties, image URIs, and the ready profiles.

    from sagemaker_containers.profiles import get_profile, validate_profile
    profile = get_profile("llama-3.1-8b-instruct")
    validate_profile(profile)          # ProfileError with one sentence if it cannot deploy
    profile.render_env()               # {"HF_MODEL_ID": ..., "OPTION_MAX_ROLLING_BATCH_SIZE": ...}
    profile.image_uri("eu-west-1")     # needs the sagemaker SDK (cdk extra)

The embedding endpoint (TEI) has its own profile: ``get_embedding_profile("minilm-l6-v2-cpu")``.
"""

from sagemaker_containers.profiles.architectures import ARCHITECTURES, ModelShape, get_architecture
from sagemaker_containers.profiles.catalog import CATALOG, Gpu, InstanceType, get_instance, list_instances
from sagemaker_containers.profiles.embeddings import (
    CPU_CATALOG,
    DEFAULT_EMBEDDING_PROFILE,
    CpuInstance,
    EmbeddingProfile,
    get_embedding_profile,
    list_embedding_profiles,
    validate_embedding_profile,
)
from sagemaker_containers.profiles.errors import ProfileError
from sagemaker_containers.profiles.files import load_profile_file, profile_from_mapping
from sagemaker_containers.profiles.model import (
    DEFAULT_CONTAINER_VERSION,
    LoraConfig,
    ModelProfile,
    SpeculativeConfig,
)
from sagemaker_containers.profiles.ready import get_profile, list_profiles
from sagemaker_containers.profiles.validation import MemoryEstimate, estimate_memory, validate_profile

__all__ = [
    "ARCHITECTURES",
    "CATALOG",
    "CPU_CATALOG",
    "DEFAULT_CONTAINER_VERSION",
    "DEFAULT_EMBEDDING_PROFILE",
    "CpuInstance",
    "EmbeddingProfile",
    "Gpu",
    "InstanceType",
    "LoraConfig",
    "MemoryEstimate",
    "ModelProfile",
    "ModelShape",
    "ProfileError",
    "SpeculativeConfig",
    "estimate_memory",
    "get_architecture",
    "get_embedding_profile",
    "get_instance",
    "get_profile",
    "list_embedding_profiles",
    "list_instances",
    "list_profiles",
    "load_profile_file",
    "profile_from_mapping",
    "validate_embedding_profile",
    "validate_profile",
]
