"""Per-region model-serving stack: the LMI endpoint and its autoscaling."""

from __future__ import annotations

from constructs import Construct

from cdk.config import DeploymentConfig
from cdk.constructs.endpoint_autoscaling import EndpointAutoscaling
from cdk.constructs.lmi_endpoint import LmiEndpoint
from cdk.stacks.base import ChatstackStack


def endpoint_name(config: DeploymentConfig) -> str:
    """The same name in every region, so a worker can name the other region's endpoint."""
    return config.physical_name("llm")


class InferenceStack(ChatstackStack):
    def __init__(self, scope: Construct, *, config: DeploymentConfig, region: str) -> None:
        super().__init__(scope, "inference", config=config, region=region)
        profile = config.profile
        components = config.use_inference_components
        min_capacity = 0 if config.inference.scale_to_zero else profile.min_instances
        self.endpoint = LmiEndpoint(
            self,
            "Llm",
            profile=profile,
            endpoint_name=endpoint_name(config),
            use_inference_components=components,
            min_instances=min_capacity,
        )
        self.autoscaling = EndpointAutoscaling(
            self,
            "Scaling",
            endpoint=self.endpoint,
            min_capacity=min_capacity,
            max_capacity=profile.max_instances,
            target_concurrency=profile.target_concurrency_per_instance,
        )

    @property
    def inference_component_name(self) -> str:
        component = self.endpoint.inference_component
        return str(component.inference_component_name) if component is not None else ""
