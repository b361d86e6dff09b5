"""The embedding endpoint of every region (TEI from the embedding profile), who may invoke it, the
functions' embedding settings, and ingestion writing every region's vector collection."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cdk.config import ConfigError, parse_config
from cdk.constructs.chat_functions import lambda_handler_path
from infra_tests.conftest import Synth, Template
from infra_tests.helpers import as_list, referenced_ids, render, statements
from infra_tests.test_config import _example
from lambdas import wiring


def _embedding(synth: Synth, template: Template, type_: str) -> dict[str, Any]:
    (found,) = [r for k, r in synth.resources(template, type_).items() if k.startswith("Embeddings")]
    return found


def _functions(synth: Synth, api: Template) -> dict[str, tuple[str, dict[str, Any]]]:
    """handler -> (logical id, properties) of every wiring function."""
    return {
        r["Properties"]["Handler"]: (logical_id, r["Properties"])
        for logical_id, r in synth.resources(api, "AWS::Lambda::Function").items()
        if str(r["Properties"].get("Handler", "")).startswith("lambdas.")
    }


def test_every_region_runs_the_rendered_tei_profile_with_its_regional_image(synth: Synth) -> None:
    profile = synth.config.embedding_profile
    for region in synth.config.regions:
        inference = synth.stack(region, "inference")
        container = _embedding(synth, inference, "AWS::SageMaker::Model")["Properties"]["PrimaryContainer"]
        assert container["Environment"] == profile.render_env()
        assert container["Environment"]["HF_MODEL_ID"] == "sentence-transformers/all-MiniLM-L6-v2"
        assert container["Image"] == profile.image_uri(region)
        assert f".dkr.ecr.{region}.amazonaws.com/tei-cpu:" in container["Image"]
        endpoint = _embedding(synth, inference, "AWS::SageMaker::Endpoint")
        assert endpoint["Properties"]["EndpointName"] == f"{synth.config.name}-embed"
        config = _embedding(synth, inference, "AWS::SageMaker::EndpointConfig")["Properties"]
        (variant,) = config["ProductionVariants"]
        assert variant["InstanceType"] == profile.instance_type == "ml.c6i.xlarge"
        # The CPU instance has an EBS volume: encrypted with the region's data key.
        assert render(config["KmsKeyId"]).startswith(f"<import {synth.config.name}-{region}-data:")


def test_the_embedding_endpoint_scales_on_invocations_per_instance(synth: Synth) -> None:
    profile = synth.config.embedding_profile
    for region in synth.config.regions:
        inference = synth.stack(region, "inference")
        target = _embedding(synth, inference, "AWS::ApplicationAutoScaling::ScalableTarget")["Properties"]
        assert target["ResourceId"] == f"endpoint/{synth.config.name}-embed/variant/AllTraffic"
        assert (target["MinCapacity"], target["MaxCapacity"]) == (
            profile.min_instances,
            profile.max_instances,
        )
        policy = _embedding(synth, inference, "AWS::ApplicationAutoScaling::ScalingPolicy")["Properties"]
        tracking = policy["TargetTrackingScalingPolicyConfiguration"]
        assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
            "SageMakerVariantInvocationsPerInstance"
        )
        assert tracking["TargetValue"] == profile.target_invocations_per_instance


def test_the_tei_execution_role_pulls_only_the_tei_repository_of_its_region(synth: Synth) -> None:
    for region in synth.config.regions:
        inference = synth.stack(region, "inference")
        account = synth.config.embedding_profile.image_uri(region).split(".", 1)[0]
        pulls = [
            render(s["Resource"])
            for k, p in synth.resources(inference, "AWS::IAM::Policy").items()
            if k.startswith("Embeddings")
            for s in statements(p)
            if "ecr:BatchGetImage" in s["Action"]
        ]
        assert pulls == [f"arn:aws:ecr:{region}:{account}:repository/tei-cpu"]


def test_only_the_embedding_functions_may_invoke_the_embedding_endpoint(synth: Synth) -> None:
    embedders = {lambda_handler_path(wiring.WORKER), lambda_handler_path(wiring.REST_API)}
    for region in synth.config.regions:
        arn = f"arn:aws:sagemaker:{region}:{synth.config.account}:endpoint/{synth.config.name}-embed"
        api = synth.stack(region, "api")
        roles = {
            props["Role"]["Fn::GetAtt"][0]: handler for handler, (_, props) in _functions(synth, api).items()
        }
        invoking = set()
        for stack_name, _, policy in synth.all_resources("AWS::IAM::Policy"):
            for statement in statements(policy):
                if arn in {render(r) for r in as_list(statement["Resource"])}:
                    assert stack_name == f"{synth.config.name}-{region}-api"
                    assert set(as_list(statement["Action"])) == {"sagemaker:InvokeEndpoint"}
                    invoking |= {roles[ref["Ref"]] for ref in policy["Properties"]["Roles"]}
        assert invoking == embedders


def test_every_function_embeds_through_the_regions_sagemaker_endpoint(synth: Synth) -> None:
    for region in synth.config.regions:
        for _, props in _functions(synth, synth.stack(region, "api")).values():
            env = props["Environment"]["Variables"]
            assert env["CHATSTACK_EMBEDDINGS"] == "sagemaker"
            assert env["CHATSTACK_EMBEDDING_ENDPOINT"] == f"{synth.config.name}-embed"


def test_ingestion_writes_every_regions_collection_and_queries_read_their_own(synth: Synth) -> None:
    name = synth.config.name
    for region in synth.config.regions:
        api = synth.stack(region, "api")
        functions = _functions(synth, api)
        worker_env = functions[lambda_handler_path(wiring.WORKER)][1]["Environment"]["Variables"]
        assert render(worker_env["CHATSTACK_OPENSEARCH_ENDPOINT"]).startswith(
            f"<import {name}-{region}-data:"
        )
        rest_id, rest = functions[lambda_handler_path(wiring.REST_API)]
        separator, endpoints = rest["Environment"]["Variables"]["CHATSTACK_OPENSEARCH_ENDPOINT"]["Fn::Join"]
        assert separator == "," and len(endpoints) == len(synth.config.regions)
        rendered = [render(e) for e in endpoints]
        assert sum(e.startswith(f"<import {name}-{region}-data:") for e in rendered) == 1
        # The other regions' endpoints are read from their SSM parameters at deploy time (weakly).
        others = [e for e in endpoints if "Fn::GetAtt" in e]
        assert len(others) == len(synth.config.regions) - 1
        for other in others:
            reader, field = other["Fn::GetAtt"]
            assert api["Resources"][reader]["Type"] == "Custom::AWS" and field == "Parameter.Value"
            assert "/collection-endpoint" in str(api["Resources"][reader]["Properties"]["Create"])
        role_id = rest["Role"]["Fn::GetAtt"][0]
        assert api["Resources"][role_id]["Properties"]["RoleName"] == f"{name}-{region}-rest-api"
        assert rest_id


def test_each_collection_admits_every_regions_ingesting_role(synth: Synth) -> None:
    name, account = synth.config.name, synth.config.account
    for region in synth.config.regions:
        api = synth.stack(region, "api")
        (policy,) = synth.resources(api, "AWS::OpenSearchServerless::AccessPolicy").values()
        document, variables = policy["Properties"]["Policy"]["Fn::Sub"]
        principals = {render(v) for v in variables.values()}
        for other in synth.config.regions:
            if other != region:
                assert f"arn:aws:iam::{account}:role/{name}-{other}-rest-api" in principals
        local_roles = set().union(*(referenced_ids(v) for v in variables.values()))
        assert len(local_roles) == 2  # this region's worker and REST roles
        assert len(json.loads(document)[0]["Principal"]) == len(variables)
        data = synth.stack(region, "data")
        (network,) = [
            p["Properties"]["Policy"]
            for p in synth.resources(data, "AWS::OpenSearchServerless::SecurityPolicy").values()
            if p["Properties"]["Type"] == "network"
        ]
        rules = json.loads(network["Fn::Sub"][0])
        assert rules[0]["AllowFromPublic"] is False and rules[0]["SourceVPCEs"]
        # Other regions reach it over its public endpoint, SigV4-signed, admitted by the policy above.
        assert rules[1]["AllowFromPublic"] is True


@pytest.mark.parametrize(
    ("overrides", "sentence"),
    [
        (
            {"embeddings": {"enabled": False}},
            "embeddings.existing_endpoint is required when embeddings.enabled is false, "
            "because the Lambda bundle carries no embedding model.",
        ),
        (
            {"embeddings": {"instance_type": "ml.t2.medium"}},
            "embeddings.profile 'minilm-l6-v2-cpu': Unknown instance type 'ml.t2.medium' for embedding "
            "profile 'minilm-l6-v2-cpu'; use a CPU instance (ml.c6i.large, ml.c6i.xlarge, ml.c6i.2xlarge, "
            "ml.c6i.4xlarge, ml.c7i.xlarge, ml.m5.xlarge) or a GPU instance from the catalog.",
        ),
        (
            {"embeddings": {"profile": "e5-large"}},
            "embeddings.profile 'e5-large': Unknown embedding profile 'e5-large'; "
            "known: minilm-l6-v2-cpu, minilm-l6-v2-gpu.",
        ),
    ],
)
def test_a_bad_embeddings_section_stops_synth_with_one_sentence(
    overrides: dict[str, Any], sentence: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**_example(), **overrides})
    assert str(caught.value) == sentence


def test_an_existing_endpoint_replaces_the_deployments_own() -> None:
    config = parse_config(
        {**_example(), "embeddings": {"enabled": False, "existing_endpoint": "shared-embed"}}
    )
    assert config.embedding_endpoint_name == "shared-embed"
