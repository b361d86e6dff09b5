"""The model endpoint of every region: the rendered profile, the regional image, scaling on concurrency."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import App

from cdk.config import DeploymentConfig
from cdk.stacks.inference import InferenceStack
from infra_tests.conftest import Synth, Template
from infra_tests.helpers import render


def llm(synth: Synth, template: Template, type_: str) -> dict[str, dict[str, Any]]:
    """The chat model's resources of `type_` (the embedding endpoint's live under `Embeddings`)."""
    return {k: v for k, v in synth.resources(template, type_).items() if not k.startswith("Embeddings")}


def test_the_container_environment_equals_the_rendered_profile_and_the_image_is_regional(
    synth: Synth,
) -> None:
    profile = synth.config.profile
    for region in synth.config.regions:
        inference = synth.stack(region, "inference")
        (model,) = llm(synth, inference, "AWS::SageMaker::Model").values()
        container = model["Properties"]["PrimaryContainer"]
        staged = profile.staged_at(synth.config.weights_uri(region))
        assert container["Environment"] == staged.render_env()
        assert container["Image"] == profile.image_uri(region)
        assert f".dkr.ecr.{region}." in container["Image"]


def test_the_endpoint_waits_for_the_container_and_is_named_for_failover(synth: Synth) -> None:
    profile = synth.config.profile
    for region in synth.config.regions:
        inference = synth.stack(region, "inference")
        (config,) = llm(synth, inference, "AWS::SageMaker::EndpointConfig").values()
        (variant,) = config["Properties"]["ProductionVariants"]
        assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == profile.container_startup_timeout_s
        assert variant["ModelDataDownloadTimeoutInSeconds"] == profile.model_data_download_timeout_s
        assert variant["InstanceType"] == profile.instance_type
        (endpoint,) = llm(synth, inference, "AWS::SageMaker::Endpoint").values()
        assert endpoint["Properties"]["EndpointName"] == f"{synth.config.name}-llm"


def test_the_endpoint_scales_on_the_high_resolution_concurrency_metric(synth: Synth) -> None:
    profile = synth.config.profile
    for region in synth.config.regions:
        inference = synth.stack(region, "inference")
        (target,) = llm(synth, inference, "AWS::ApplicationAutoScaling::ScalableTarget").values()
        props = target["Properties"]
        assert props["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
        assert props["ResourceId"] == f"endpoint/{synth.config.name}-llm/variant/AllTraffic"
        assert (props["MinCapacity"], props["MaxCapacity"]) == (profile.min_instances, profile.max_instances)
        (policy,) = llm(synth, inference, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
        tracking = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
            "SageMakerVariantConcurrentRequestsPerModelHighResolution"
        )
        assert tracking["TargetValue"] == profile.target_concurrency_per_instance


def test_the_execution_role_pulls_only_the_lmi_repository_of_its_region(synth: Synth) -> None:
    for region in synth.config.regions:
        inference = synth.stack(region, "inference")
        image = synth.config.profile.image_uri(region)
        account = image.split(".", 1)[0]
        pulls = [
            s
            for p in llm(synth, inference, "AWS::IAM::Policy").values()
            for s in p["Properties"]["PolicyDocument"]["Statement"]
            if "ecr:BatchGetImage" in s["Action"]
        ]
        assert [render(s["Resource"]) for s in pulls] == [
            f"arn:aws:ecr:{region}:{account}:repository/djl-inference"
        ]


def test_inference_components_scale_copies_to_zero_when_asked(example_config: DeploymentConfig) -> None:
    """A second, small synth of one inference stack with inference components and scale-to-zero."""
    config = example_config.model_copy(
        update={
            "inference": example_config.inference.model_copy(
                update={"inference_components": True, "scale_to_zero": True}
            )
        }
    )
    app = App()
    stack = InferenceStack(app, config=config, region=config.primary_region)
    template = json.loads(json.dumps(app.synth().get_stack_by_name(stack.stack_name).template))
    resources = [r for k, r in template["Resources"].items() if not k.startswith("Embedding")]
    (component,) = [r for r in resources if r["Type"] == "AWS::SageMaker::InferenceComponent"]
    (endpoint_config,) = [r for r in resources if r["Type"] == "AWS::SageMaker::EndpointConfig"]
    variant = endpoint_config["Properties"]["ProductionVariants"][0]
    assert "ModelName" not in variant
    assert variant["ManagedInstanceScaling"]["MinInstanceCount"] == 0
    (target,) = [r for r in resources if r["Type"] == "AWS::ApplicationAutoScaling::ScalableTarget"]
    assert target["Properties"]["ScalableDimension"] == "sagemaker:inference-component:DesiredCopyCount"
    assert target["Properties"]["MinCapacity"] == 0
    assert target["Properties"]["ResourceId"] == (
        f"inference-component/{component['Properties']['InferenceComponentName']}"
    )
    policies = {
        r["Properties"]["PolicyType"]: r["Properties"]
        for r in resources
        if r["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"
    }
    assert policies["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"][
        "PredefinedMetricSpecification"
    ]["PredefinedMetricType"] == ("SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution")
    assert "StepScaling" in policies, "a step policy must bring the first copy back from zero"
    alarms = [r for r in resources if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert any(a["Properties"]["MetricName"] == "NoCapacityInvocationFailures" for a in alarms)
