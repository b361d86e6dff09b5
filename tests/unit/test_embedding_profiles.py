"""Embedding (TEI) profiles: the ready profile's rendering, image URIs from the SDK's offline tables,
price, one test per validation rule asserting its sentence, and `chatstack model embeddings`."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from chatstack.commands.model import model
from sagemaker_containers.profiles import (
    DEFAULT_EMBEDDING_PROFILE,
    EmbeddingProfile,
    ProfileError,
    get_embedding_profile,
    list_embedding_profiles,
    validate_embedding_profile,
)


def variant(**changes: Any) -> EmbeddingProfile:
    data = get_embedding_profile("minilm-l6-v2-cpu").model_dump()
    data.update(changes)
    return EmbeddingProfile.model_validate(data)


def rejected(profile: EmbeddingProfile) -> str:
    with pytest.raises(ProfileError) as caught:
        validate_embedding_profile(profile)
    return caught.value.message


def test_the_default_profile_is_minilm_on_a_cpu_instance_and_renders_the_tei_environment() -> None:
    profile = get_embedding_profile(DEFAULT_EMBEDDING_PROFILE)
    assert profile.name == "minilm-l6-v2-cpu"
    assert (profile.model_id, profile.dimensions) == ("sentence-transformers/all-MiniLM-L6-v2", 384)
    assert profile.instance_type == "ml.c6i.xlarge" and not profile.uses_gpu
    assert profile.render_env() == {
        "HF_MODEL_ID": "sentence-transformers/all-MiniLM-L6-v2",
        "MAX_BATCH_TOKENS": "16384",
        "MAX_CLIENT_BATCH_SIZE": "32",
        "MAX_CONCURRENT_REQUESTS": "512",
        "AUTO_TRUNCATE": "true",
    }


def test_a_pinned_revision_is_rendered_for_the_sagemaker_entrypoint() -> None:
    assert variant(revision="abc123").render_env()["HF_MODEL_REVISION"] == "abc123"


def test_every_ready_profile_validates() -> None:
    for profile in list_embedding_profiles():
        validate_embedding_profile(profile)


def test_cpu_profiles_get_the_tei_cpu_image_of_each_region_from_the_sdk_table() -> None:
    profile = get_embedding_profile("minilm-l6-v2-cpu")
    assert profile.image_uri("us-east-1") == (
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/tei-cpu:2.0.1-tei1.8.2-cpu-py310-ubuntu22.04"
    )
    assert profile.image_uri("us-west-2").startswith("246618743249.dkr.ecr.us-west-2.amazonaws.com/tei-cpu:")


def test_gpu_profiles_get_the_cuda_tei_image_and_no_volume_key() -> None:
    profile = get_embedding_profile("minilm-l6-v2-gpu")
    assert profile.uses_gpu and profile.has_instance_storage
    assert profile.image_uri("eu-west-1").split("/", 1)[1].startswith("tei:2.0.1-tei1.8.2-gpu-")
    assert not get_embedding_profile("minilm-l6-v2-cpu").has_instance_storage


def test_an_image_override_wins_and_an_unknown_tei_version_is_one_sentence() -> None:
    assert variant(image_uri_override="example/tei:1").image_uri("us-east-1") == "example/tei:1"
    with pytest.raises(ProfileError) as caught:
        variant(tei_version="0.1.0").image_uri("us-east-1")
    assert caught.value.message.startswith(
        "The sagemaker SDK has no huggingface-tei-cpu image for version '0.1.0' in region 'us-east-1' ("
    )
    assert caught.value.message.endswith(").") and "\n" not in caught.value.message


def test_price_comes_from_the_catalog_and_idle_cost_is_min_instances_times_it() -> None:
    profile = variant(min_instances=2, instance_count=2)
    assert profile.instance_price_per_hour_usd == pytest.approx(0.204)
    assert profile.idle_price_per_hour_usd == pytest.approx(0.408)
    assert variant(price_per_hour_override_usd=0.5).instance_price_per_hour_usd == 0.5


def test_an_unpriced_instance_asks_for_an_override() -> None:
    with pytest.raises(ProfileError) as caught:
        variant(instance_type="ml.c7i.xlarge").instance_price_per_hour_usd  # noqa: B018
    assert caught.value.message == (
        "The catalog has no sourced price for ml.c7i.xlarge; "
        "set price_per_hour_override_usd in embedding profile 'minilm-l6-v2-cpu'."
    )


def test_dimensions_other_than_the_stores_are_refused() -> None:
    assert rejected(variant(dimensions=768)) == (
        "Embedding profile 'minilm-l6-v2-cpu' makes 768-dimension vectors but the vector store holds 384; "
        "change the index mapping, the pgvector column and lambdas.rag.embeddings.DIMENSION together, "
        "or pick a 384-dimension model."
    )


def test_an_unknown_instance_type_is_refused() -> None:
    message = rejected(variant(instance_type="ml.t3.medium"))
    assert message.startswith(
        "Unknown instance type 'ml.t3.medium' for embedding profile 'minilm-l6-v2-cpu';"
    )


def test_min_above_max_instances_is_refused() -> None:
    assert rejected(variant(min_instances=3, max_instances=2, instance_count=3)) == (
        "Embedding profile 'minilm-l6-v2-cpu' has min_instances 3 above max_instances 2."
    )


def test_a_starting_count_outside_the_scaling_range_is_refused() -> None:
    assert rejected(variant(instance_count=5)) == (
        "Embedding profile 'minilm-l6-v2-cpu' starts 5 instances, outside min_instances 1 to max_instances 4."
    )


def test_a_client_batch_below_the_embedders_batch_is_refused() -> None:
    assert rejected(variant(max_client_batch_size=16)) == (
        "Embedding profile 'minilm-l6-v2-cpu' sets max_client_batch_size 16, below the 32 texts the "
        "embedder sends per request, so TEI would refuse full batches."
    )


def test_the_profile_is_frozen_and_rejects_unknown_fields() -> None:
    profile = get_embedding_profile("minilm-l6-v2-cpu")
    with pytest.raises(ValidationError):
        profile.dimensions = 768
    with pytest.raises(ValidationError):
        variant(pooling="cls")


def test_an_unknown_profile_name_lists_the_known_ones() -> None:
    with pytest.raises(ProfileError) as caught:
        get_embedding_profile("e5-large")
    assert caught.value.message == (
        "Unknown embedding profile 'e5-large'; known: minilm-l6-v2-cpu, minilm-l6-v2-gpu."
    )


def test_model_embeddings_lists_each_profile_with_instance_and_idle_cost() -> None:
    result = CliRunner().invoke(model, ["embeddings"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = lines.index("minilm-l6-v2-cpu")
    assert lines[start + 1] == (
        "  sentence-transformers/all-MiniLM-L6-v2 (384 dimensions) on 1 x ml.c6i.xlarge "
        "(CPU, huggingface-tei-cpu 1.8.2), 1-4 instances"
    )
    assert lines[start + 2] == "  $0.2040/h per instance (U), $0.2040/h idle at 1 instance(s)"
    assert "minilm-l6-v2-gpu" in lines
