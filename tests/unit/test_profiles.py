"""Model profiles: what each ready profile renders, the memory estimate, cost, image URIs, and one test
per validation rule asserting its sentence."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sagemaker_containers.profiles import (
    CATALOG,
    DEFAULT_CONTAINER_VERSION,
    ModelProfile,
    ProfileError,
    estimate_memory,
    get_profile,
    list_profiles,
    load_profile_file,
    profile_from_mapping,
    validate_profile,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "sagemaker_containers" / "profiles" / "examples"
ASYNC_MODE = {
    "OPTION_ASYNC_MODE": "true",
    "OPTION_ROLLING_BATCH": "disable",
    "OPTION_ENTRYPOINT": "djl_python.lmi_vllm.vllm_async_service",
}


def variant(name: str, **changes: Any) -> ModelProfile:
    """A ready profile with some fields changed, re-validated by pydantic like a user's file would be."""
    data = get_profile(name).model_dump(exclude={"target_concurrency_per_instance", "max_instances"})
    data.update(changes)
    return ModelProfile.model_validate(data)


def rejected(profile: ModelProfile) -> str:
    with pytest.raises(ProfileError) as caught:
        validate_profile(profile)
    return caught.value.message


# ---- ready profiles render the expected environment ----------------------------------------------


def test_the_8b_instruct_profile_renders_bf16_async_mode_with_an_explicit_batch_and_queue() -> None:
    assert get_profile("llama-3.1-8b-instruct").render_env() == {
        "HF_MODEL_ID": "meta-llama/Llama-3.1-8B-Instruct",
        **ASYNC_MODE,
        "OPTION_TENSOR_PARALLEL_DEGREE": "1",
        "OPTION_DTYPE": "bf16",
        "OPTION_MAX_MODEL_LEN": "4096",
        "OPTION_MAX_ROLLING_BATCH_SIZE": "8",
        "SERVING_JOB_QUEUE_SIZE": "16",
        "OPTION_GPU_MEMORY_UTILIZATION": "0.9",
        "OPTION_ENABLE_PREFIX_CACHING": "true",
        "OPTION_MODEL_LOADING_TIMEOUT": "1800",
    }


def test_the_awq_profile_points_at_the_int4_checkpoint_and_sets_no_quantize_option() -> None:
    env = get_profile("llama-3.1-8b-instruct-awq").render_env()
    assert env["HF_MODEL_ID"] == "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
    assert env["OPTION_DTYPE"] == "fp16"
    assert env["OPTION_MAX_MODEL_LEN"] == "8192"
    assert env["OPTION_MAX_ROLLING_BATCH_SIZE"] == "12"
    assert env["SERVING_JOB_QUEUE_SIZE"] == "24"
    assert "OPTION_QUANTIZE" not in env


def test_the_70b_fp8_profile_shards_over_eight_gpus_without_a_quantize_option() -> None:
    profile = get_profile("llama-3.3-70b-instruct-fp8")
    env = profile.render_env()
    assert profile.instance.gpus == 8
    assert env["OPTION_TENSOR_PARALLEL_DEGREE"] == "8"
    assert env["HF_MODEL_ID"] == "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic"
    assert env["OPTION_MAX_ROLLING_BATCH_SIZE"] == "64"
    assert env["OPTION_MODEL_LOADING_TIMEOUT"] == "3600"
    assert "OPTION_QUANTIZE" not in env


def test_the_eagle_profile_passes_its_speculative_config_as_one_json_value() -> None:
    env = get_profile("llama-3.1-8b-instruct-eagle3").render_env()
    config = env["OPTION_SPECULATIVE_CONFIG"]
    assert json.loads(config) == {
        "method": "eagle3",
        "model": "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B",
        "num_speculative_tokens": 4,
    }
    assert len(config.encode()) < 1024
    assert env["OPTION_MAX_ROLLING_BATCH_SIZE"] == "4"


def test_the_lora_profile_enables_lora_and_maps_each_tenant_to_its_adapter() -> None:
    profile = get_profile("llama-3.1-8b-instruct-lora")
    env = profile.render_env()
    assert env["HF_MODEL_ID"] == "s3://chatstack-models/llama-3.1-8b-instruct/"
    assert env["OPTION_ENABLE_LORA"] == "true"
    assert env["OPTION_MAX_LORAS"] == "4"
    assert env["OPTION_MAX_LORA_RANK"] == "16"
    assert env["OPTION_MAX_CPU_LORAS"] == "8"
    assert env["OPTION_TENSOR_PARALLEL_DEGREE"] == "4"
    assert profile.workers_per_instance == 1
    assert profile.adapter_for_tenant("acme") == "acme-support"
    assert profile.adapter_for_tenant("globex") == "globex-legal"
    assert profile.adapter_for_tenant("initech") is None
    assert profile.adapter_sources() == {
        "adapters/acme-support/": "s3://chatstack-models/adapters/acme-support/"
    }


@pytest.mark.parametrize("profile", [p for p in list_profiles() if not p.is_local], ids=lambda p: p.name)
def test_every_ready_gpu_profile_validates_and_renders_the_fixed_rules(profile: ModelProfile) -> None:
    validate_profile(profile)
    env = profile.render_env()
    assert {k: env[k] for k in ASYNC_MODE} == ASYNC_MODE
    assert int(env["SERVING_JOB_QUEUE_SIZE"]) >= int(env["OPTION_MAX_ROLLING_BATCH_SIZE"])
    assert "lmi-dist" not in json.dumps(env)
    assert all(len(value.encode()) < 1024 for value in env.values())
    assert env["OPTION_ENABLE_PREFIX_CACHING"] in ("true", "false")


def test_properties_carry_the_same_settings_under_their_serving_properties_names() -> None:
    profile = get_profile("llama-3.1-8b-instruct-eagle3")
    lines = profile.render("properties").splitlines()  # type: ignore[union-attr]
    assert lines[1] == "engine=Python"
    assert "option.model_id=meta-llama/Llama-3.1-8B-Instruct" in lines
    assert "option.entryPoint=djl_python.lmi_vllm.vllm_async_service" in lines
    assert "option.max_rolling_batch_size=4" in lines
    assert "job_queue_size=8" in lines
    assert any(line.startswith('option.speculative_config={"method":"eagle3"') for line in lines)
    assert not any(line.startswith(("OPTION_", "HF_", "SERVING_")) for line in lines)
    assert "engine" not in profile.render("env")


def test_the_local_profile_costs_nothing_and_has_no_container_configuration() -> None:
    profile = get_profile("local-extractive")
    assert profile.instance.gpus == 0
    assert profile.price_per_hour_usd == 0.0
    assert profile.cost_per_output_token_usd() == 0.0
    with pytest.raises(ProfileError, match="local backend"):
        profile.render_env()


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ProfileError) as caught:
        get_profile("gpt-17")
    assert caught.value.message.startswith("Unknown model profile 'gpt-17'; known: llama-3.1-8b-instruct")


def test_profiles_are_frozen() -> None:
    with pytest.raises(ValidationError):
        get_profile("llama-3.1-8b-instruct").max_batch_size = 64


# ---- memory estimate and cost ---------------------------------------------------------------------


def test_memory_estimate_follows_the_formulas_for_the_8b_model() -> None:
    memory = estimate_memory(get_profile("llama-3.1-8b-instruct"))
    assert memory.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    assert memory.weights_bytes == 8_030_261_248 * 2
    assert memory.kv_cache_bytes == memory.kv_bytes_per_token * 8 * 4096
    assert memory.available_bytes == int(22.49 * 1024**3 * 0.9 - 1024**3)
    assert memory.fits


def test_awq_weights_are_4_25_bits_except_the_16_bit_embedding_and_head() -> None:
    memory = estimate_memory(get_profile("llama-3.1-8b-instruct-awq"))
    embedding = 2 * 128256 * 4096
    assert memory.weights_bytes == int((8_030_261_248 - embedding) * 4.25 / 8) + embedding * 2


def test_fp8_kv_cache_halves_the_bytes_per_token() -> None:
    memory = estimate_memory(variant("llama-3.1-8b-instruct", kv_cache_dtype="fp8"))
    assert memory.kv_bytes_per_token == 2 * 32 * 8 * 128 * 1


def test_cost_per_output_token_is_price_over_3600_times_throughput() -> None:
    profile = variant("llama-3.1-8b-instruct", throughput_tokens_per_s=500.0)
    assert profile.price_per_hour_usd == pytest.approx(2 * 1.52)
    assert profile.cost_per_output_token_usd() == pytest.approx(1.52 / (3600 * 500))
    assert profile.cost_per_1k_output_tokens_usd() == pytest.approx(1.52 / (3600 * 500) * 1000)


def test_an_instance_without_a_sourced_price_asks_for_an_override() -> None:
    profile = variant("llama-3.1-8b-instruct", instance_type="ml.g6e.xlarge")
    with pytest.raises(ProfileError, match="set price_per_hour_override_usd"):
        profile.cost_per_output_token_usd()
    priced = variant("llama-3.1-8b-instruct", instance_type="ml.g6e.xlarge", price_per_hour_override_usd=2.0)
    assert priced.price_per_hour_usd == 4.0


def test_every_catalog_price_names_its_source_and_date() -> None:
    for row in CATALOG.values():
        assert row.price_source and row.price_date
        assert (row.price_per_hour_usd is None) == (row.price_confidence == "none")
        if row.price_confidence in ("S", "U"):
            assert row.price_source.startswith(f"[{row.price_confidence}]")


# ---- image URIs -----------------------------------------------------------------------------------


def test_image_uri_uses_the_registry_account_of_each_region() -> None:
    pytest.importorskip("sagemaker.core")
    profile = get_profile("llama-3.1-8b-instruct")
    east = profile.image_uri("us-east-1")
    assert east.startswith("763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:")
    assert east.split(":")[1].startswith(DEFAULT_CONTAINER_VERSION + "-lmi")
    assert profile.image_uri("ap-northeast-3").startswith("364406365360.dkr.ecr.ap-northeast-3.")


def test_the_pinned_container_version_is_the_sdk_latest() -> None:
    pytest.importorskip("sagemaker.core")
    from sagemaker_containers.profiles.images import latest_lmi_version

    assert latest_lmi_version() == DEFAULT_CONTAINER_VERSION


def test_an_image_override_wins_and_an_unknown_version_is_one_sentence() -> None:
    pytest.importorskip("sagemaker.core")
    override = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/my-lmi:patched"
    assert variant("llama-3.1-8b-instruct", image_uri_override=override).image_uri("eu-west-1") == override
    with pytest.raises(ProfileError) as caught:
        variant("llama-3.1-8b-instruct", container_version="0.1.0").image_uri("us-east-1")
    assert caught.value.message.count(". ") == 0


# ---- one test per validation rule -----------------------------------------------------------------


def test_rule_tensor_parallel_degree_must_divide_the_gpu_count() -> None:
    profile = variant("llama-3.1-8b-instruct", instance_type="ml.g5.12xlarge", tensor_parallel_degree=3)
    assert rejected(profile) == (
        "tensor_parallel_degree 3 must divide the 4 GPUs of ml.g5.12xlarge (use 1, 2, 4)."
    )


def test_rule_weights_plus_kv_cache_must_fit_in_gpu_memory() -> None:
    message = rejected(variant("llama-3.1-8b-instruct", max_batch_size=16, max_model_len=8192))
    assert message == (
        "Profile 'llama-3.1-8b-instruct' does not fit in GPU memory on ml.g5.2xlarge: weights 14.96 GiB "
        "+ KV cache 16.00 GiB (131072 tokens x 131072 bytes) = 30.96 GiB of 19.24 GiB available; "
        "lower max_batch_size or max_model_len, quantize, or use a larger instance."
    )


def test_rule_no_quantize_option_for_a_pre_quantized_checkpoint() -> None:
    assert rejected(variant("llama-3.1-8b-instruct-awq", quantization="fp8")) == (
        "The checkpoint is already quantized (AWQ), so quantization must not be set: "
        "vLLM detects the format itself and picks its kernels."
    )


def test_rule_runtime_quantization_only_where_lmi_supports_it() -> None:
    assert rejected(variant("llama-3.1-8b-instruct", quantization="awq")) == (
        "Runtime quantization 'awq' is not supported by LMI (only fp8 and bitsandbytes); "
        "for AWQ or GPTQ load a pre-quantized checkpoint and set checkpoint_quantization instead."
    )


def test_rule_lora_forces_one_worker_so_tensor_parallelism_spans_all_gpus() -> None:
    assert rejected(variant("llama-3.1-8b-instruct-lora", tensor_parallel_degree=2)) == (
        "LoRA forces LMI to run one worker per instance, so tensor_parallel_degree must equal the "
        "4 GPUs of ml.g5.12xlarge (got 2)."
    )


def test_rule_every_environment_value_under_1024_bytes() -> None:
    profile = get_profile("llama-3.1-8b-instruct-eagle3")
    long = profile.speculative.model_copy(update={"extra": {"note": "x" * 1000}})  # type: ignore[union-attr]
    message = rejected(variant("llama-3.1-8b-instruct-eagle3", speculative=long.model_dump()))
    assert message.startswith("OPTION_SPECULATIVE_CONFIG is ")
    assert message.endswith(" bytes; every environment value must be under 1024 bytes.")


def test_rule_at_most_16_environment_entries_for_inference_components() -> None:
    profile = variant(
        "llama-3.1-8b-instruct-lora", use_inference_components=True, extra_options={"enforce_eager": "true"}
    )
    assert rejected(profile) == (
        "The environment has 17 entries but an inference component allows at most 16; "
        "drop extra_options or deploy without inference components."
    )


def test_rule_at_most_100_environment_entries_for_a_model() -> None:
    options = {f"custom_{i}": "1" for i in range(90)}
    message = rejected(variant("llama-3.1-8b-instruct", extra_options=options))
    assert message.startswith("The environment has 102 entries and ")
    assert message.endswith("a SageMaker model allows at most 100 entries and 32768 bytes.")


def test_rule_batch_size_must_be_explicit() -> None:
    data = get_profile("llama-3.1-8b-instruct").model_dump()
    del data["max_batch_size"]
    with pytest.raises(ProfileError) as caught:
        profile_from_mapping(data)
    assert caught.value.message == (
        "max_batch_size must be set explicitly, because the LMI container's default differs by mode "
        "(256 in rolling-batch mode, 32 in async mode)."
    )


def test_rule_job_queue_must_hold_at_least_one_batch() -> None:
    assert rejected(variant("llama-3.1-8b-instruct", job_queue_size=4)) == (
        "job_queue_size 4 must be at least max_batch_size 8, "
        "or LMI turns away requests its batch has room for."
    )


def test_rule_context_cannot_exceed_the_models_positions() -> None:
    assert rejected(variant("llama-3.1-8b-instruct-awq", max_model_len=200_000, max_batch_size=1)) == (
        "max_model_len 200000 exceeds the model's context of 131072 tokens."
    )


def test_rule_scale_to_zero_needs_inference_components() -> None:
    assert rejected(variant("llama-3.1-8b-instruct", min_instances=0)).startswith(
        "min_instances 0 (scale to zero) needs use_inference_components"
    )


def test_rule_lora_weights_must_live_on_s3() -> None:
    message = rejected(variant("llama-3.1-8b-instruct-lora", model_id="meta-llama/Llama-3.1-8B-Instruct"))
    assert message == (
        "LoRA adapters load from the adapters/ folder next to the weights, so model_id must be an s3:// "
        "prefix (got 'meta-llama/Llama-3.1-8B-Instruct')."
    )


def test_rule_adapter_folder_must_carry_the_adapter_name() -> None:
    lora = get_profile("llama-3.1-8b-instruct-lora").lora.model_dump()  # type: ignore[union-attr]
    lora["adapters"]["globex-legal"] = "adapters/globex-v2"
    assert rejected(variant("llama-3.1-8b-instruct-lora", lora=lora)).startswith(
        "Adapter 'globex-legal' must come from an s3:// URI or the folder adapters/globex-legal"
    )


def test_rule_tenants_select_only_listed_adapters() -> None:
    lora = get_profile("llama-3.1-8b-instruct-lora").lora.model_dump()  # type: ignore[union-attr]
    lora["tenant_adapters"]["initech"] = "initech-hr"
    assert rejected(variant("llama-3.1-8b-instruct-lora", lora=lora)) == (
        "Tenant 'initech' selects adapter 'initech-hr', which the profile does not list."
    )


def test_rule_unknown_instance_type() -> None:
    assert rejected(variant("llama-3.1-8b-instruct", instance_type="ml.g4dn.xlarge")) == (
        "Unknown instance type 'ml.g4dn.xlarge'; the catalog covers the ml.g5, ml.g6, ml.g6e, ml.p4d, "
        "ml.p5 families and 'local'."
    )


# ---- profile files --------------------------------------------------------------------------------


def test_the_json_example_loads_and_validates() -> None:
    profile = load_profile_file(EXAMPLES / "qwen2.5-7b-instruct.json")
    memory = validate_profile(profile)
    assert profile.name == "qwen2.5-7b-instruct"
    assert memory.kv_bytes_per_token == 2 * 28 * 4 * 128 * 2
    assert profile.render_env()["OPTION_MAX_ROLLING_BATCH_SIZE"] == "8"


def test_the_yaml_example_loads_with_an_inline_shape() -> None:
    pytest.importorskip("yaml")
    profile = load_profile_file(EXAMPLES / "mistral-7b-instruct.yaml")
    validate_profile(profile)
    assert profile.render_env()["OPTION_QUANTIZE"] == "fp8"
    assert profile.use_inference_components and profile.min_instances == 0


def test_a_yaml_file_without_pyyaml_asks_for_it_or_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # None in sys.modules makes `import yaml` raise ImportError, exactly as when it is not installed.
    monkeypatch.setitem(sys.modules, "yaml", None)
    path = tmp_path / "p.yaml"
    path.write_text("name: x\n")
    with pytest.raises(ProfileError) as caught:
        load_profile_file(path)
    assert caught.value.message == "Reading p.yaml needs pyyaml; install it or write the profile as JSON."


def test_invalid_json_is_one_sentence_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"name": "x",\n  "max_batch_size": }')
    with pytest.raises(ProfileError) as caught:
        load_profile_file(path)
    assert caught.value.message == "bad.json is not valid JSON: Expecting value at line 2, column 21."


def test_unknown_and_mistyped_fields_are_one_sentence() -> None:
    base = get_profile("llama-3.1-8b-instruct").model_dump()
    with pytest.raises(ProfileError) as caught:
        profile_from_mapping({**base, "max_batch": 8})
    assert caught.value.message == "The profile has an unknown field 'max_batch'."
    with pytest.raises(ProfileError) as caught:
        profile_from_mapping({**base, "dtype": "int3"})
    assert caught.value.message.startswith("Field 'dtype' is invalid: input should be 'auto'")
