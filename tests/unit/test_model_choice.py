"""Model choice and tenant adapters (lambdas/services/models.py): the offered models come from
CHATSTACK_MODELS (default first), any other name is refused with BAD_REQUEST naming the choices, the
tenant's LoRA adapter applies to the default model only, and a model on its own endpoint gets its
own client."""

from __future__ import annotations

import pytest

from lambdas.config import Settings, settings_from_env
from lambdas.errors import BadRequest
from lambdas.runtime import Deps
from lambdas.services import models

ENDPOINT = "http://127.0.0.1:9/invocations"


def test_without_a_list_the_deployment_offers_its_profile() -> None:
    settings = Settings(model_profile="llama-8b")
    assert [m.name for m in models.offered(settings)] == ["llama-8b"]
    assert models.choose(settings, None).name == "llama-8b"


def test_an_unknown_model_is_refused_naming_the_choices() -> None:
    settings = Settings(models="small, large=http://10.0.0.1/invocations")
    assert models.choose(settings, "large").endpoint == "http://10.0.0.1/invocations"
    with pytest.raises(BadRequest, match="offers: small, large"):
        models.choose(settings, "gpt-4o")


def test_tenant_adapters_with_a_default_for_the_rest() -> None:
    settings = Settings(tenant_adapters="acme=acme-support, globex=globex-legal, *=general")
    assert models.tenant_adapter(settings, "acme") == "acme-support"
    assert models.tenant_adapter(settings, "initech") == "general"
    assert models.tenant_adapter(Settings(tenant_adapters="acme=acme-support"), "initech") is None


def test_the_adapter_applies_to_the_default_model_only_and_other_endpoints_get_their_own_client() -> None:
    settings = Settings(model_endpoint=ENDPOINT, redis_url="redis://127.0.0.1:9",
                        models="tuned,base=http://127.0.0.1:8/invocations",
                        tenant_adapters="acme=acme-support")
    deps = Deps(settings)
    tuned = models.select(deps, tenant_id="acme", requested=None)
    assert (tuned.model.name, tuned.adapter, tuned.client) == ("tuned", "acme-support", deps.model)
    base = models.select(deps, tenant_id="acme", requested="base")
    assert base.adapter is None and base.client is not deps.model
    assert models.select(deps, tenant_id="acme", requested="base").client is base.client


def test_a_malformed_setting_fails_at_cold_start() -> None:
    with pytest.raises(SystemExit, match="CHATSTACK_MODELS"):
        settings_from_env({"CHATSTACK_MODELS": "small,=http://x"})


def test_the_lora_profile_renders_the_setting_the_worker_maps_tenants_with() -> None:
    from sagemaker_containers.profiles import get_profile

    profile = get_profile("llama-3.1-8b-instruct-lora")
    settings = Settings(tenant_adapters=profile.tenant_adapters_setting())
    for tenant in ("acme", "globex", "initech"):
        assert models.tenant_adapter(settings, tenant) == profile.adapter_for_tenant(tenant)
    assert get_profile("llama-3.1-8b-instruct").tenant_adapters_setting() == ""


def test_each_offered_model_may_have_its_own_price_and_the_rest_cost_the_deployment_s() -> None:
    settings = Settings(models="small,large=http://10.0.0.1/invocations", model_prices="large=2.5",
                        model_price_per_1k_output_tokens_usd=0.5)
    assert settings.price_per_1k_output_tokens("large") == 2.5
    assert settings.price_per_1k_output_tokens("small") == 0.5
    assert settings.price_per_1k_output_tokens(None) == 0.5  # the default model, small
    priced_default = Settings(models="small,large", model_prices="small=0.25")
    assert priced_default.price_per_1k_output_tokens(None) == 0.25


@pytest.mark.parametrize(
    ("prices", "why"),
    [
        ("huge=1", "CHATSTACK_MODEL_PRICES: .*names huge, which this deployment does not offer"),
        ("large=cheap", "is not NAME=USD"),
        ("large=-1", "is not NAME=USD"),
        ("=1", "is not NAME=USD"),
    ],
)
def test_a_price_for_a_model_not_offered_or_not_a_price_is_refused_at_start(prices: str, why: str) -> None:
    with pytest.raises(SystemExit, match=why):
        settings_from_env({"CHATSTACK_MODELS": "small,large", "CHATSTACK_MODEL_PRICES": prices})
