"""Per-region model-serving stack: the LMI endpoint and its autoscaling, and the TEI embedding endpoint."""

from __future__ import annotations

from aws_cdk import aws_kms as kms
from constructs import Construct

from cdk.config import DeploymentConfig
from cdk.constructs.embedding_endpoint import EmbeddingEndpoint
from cdk.constructs.endpoint_autoscaling import EndpointAutoscaling
from cdk.constructs.lmi_endpoint import LmiEndpoint
from cdk.stacks.base import ChatstackStack


def endpoint_name(config: DeploymentConfig) -> str:
    """The same name in every region, so a worker can name the other region's endpoint."""
    return config.physical_name("llm")


class InferenceStack(ChatstackStack):
    def __init__(
        self, scope: Construct, *, config: DeploymentConfig, region: str, key: kms.IKey | None = None
    ) -> None:
        """`key` encrypts the embedding endpoint's volume (the region's data key); without one the stack
        makes its own."""
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
            weights_uri=config.weights_uri(region),
            ami_version=config.inference.ami_version,
        )
        self.autoscaling = EndpointAutoscaling(
            self,
            "Scaling",
            endpoint=self.endpoint,
            min_capacity=min_capacity,
            max_capacity=profile.max_instances,
            target_concurrency=profile.target_concurrency_per_instance,
        )
        self.embeddings: EmbeddingEndpoint | None = None
        if config.embeddings.enabled:
            if key is None:
                key = kms.Key(
                    self,
                    "EmbeddingKey",
                    description="chatstack embedding endpoint volume",
                    enable_key_rotation=True,
                )
            self.embeddings = EmbeddingEndpoint(
                self,
                "Embeddings",
                profile=config.embedding_profile,
                endpoint_name=config.embedding_endpoint_name,
                key=key,
            )

    @property
    def inference_component_name(self) -> str:
        component = self.endpoint.inference_component
        return str(component.inference_component_name) if component is not None else ""
