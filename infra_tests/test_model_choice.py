"""The deployed worker gets the LoRA profile's tenant -> adapter map (lambdas/services/models.py reads
CHATSTACK_TENANT_ADAPTERS), so per-tenant adapters reach the model in the cloud as they do locally."""

from __future__ import annotations

from infra_tests.conftest import Synth


def test_every_function_gets_the_profiles_tenant_adapter_map(synth: Synth) -> None:
    expected = synth.config.profile.tenant_adapters_setting()
    for region in synth.config.regions:
        template = synth.stack(region, "api")
        workers = [
            resource for logical_id, resource in synth.resources(template, "AWS::Lambda::Function").items()
            if logical_id.startswith("FunctionsWorker")
        ]
        assert workers, region
        env = workers[0]["Properties"]["Environment"]["Variables"]
        assert env.get("CHATSTACK_TENANT_ADAPTERS") == expected
