"""SageMaker real-time endpoint running Hugging Face Text Embeddings Inference (TEI) from an embedding
profile, with target-tracking autoscaling on invocations per instance.

The container's environment is exactly `profile.render_env()`; the image is the SDK's TEI image of
this region (CPU or GPU build). The storage volume is encrypted with the given KMS key, except on
instances whose model sits on local NVMe (SageMaker refuses a key there; the hardware encrypts it).
Outside a VPC for the same reason as the LMI endpoint: it needs no private resource, pulls the model
from the Hugging Face Hub through SageMaker's network, and leaves no network interfaces at teardown.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from cdk.constructs.sagemaker_container import container_model, container_role, grant_container_runtime
from cdk.nag import acknowledge
from sagemaker_containers.profiles import EmbeddingProfile

VARIANT = "AllTraffic"


class EmbeddingEndpoint(Construct):
    """Model + EndpointConfig + Endpoint + ScalableTarget with one target-tracking policy."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        profile: EmbeddingProfile,
        endpoint_name: str,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        region = stack.region
        self.profile = profile
        self.endpoint_name = endpoint_name
        self.image_uri = profile.image_uri(region)
        self.environment = profile.render_env()
        self.role = container_role(self, description="TEI container: pull its image, write logs and metrics")
        self._grant_runtime(region)
        self.model = container_model(
            self, role=self.role, image_uri=self.image_uri, environment=self.environment
        )
        encrypt_volume = not profile.has_instance_storage
        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            kms_key_id=key.key_arn if encrypt_volume else None,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT,
                    model_name=self.model.attr_model_name,
                    instance_type=profile.instance_type,
                    initial_instance_count=profile.instance_count,
                    initial_variant_weight=1.0,
                    container_startup_health_check_timeout_in_seconds=profile.container_startup_timeout_s,
                    model_data_download_timeout_in_seconds=profile.model_data_download_timeout_s,
                    routing_config=sagemaker.CfnEndpointConfig.RoutingConfigProperty(
                        routing_strategy="LEAST_OUTSTANDING_REQUESTS"
                    ),
                )
            ],
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=endpoint_name,
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
        )
        self.target = appscaling.ScalableTarget(
            self,
            "ScalingTarget",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{endpoint_name}/variant/{VARIANT}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=profile.min_instances,
            max_capacity=profile.max_instances,
        )
        self.target.node.add_dependency(self.endpoint)
        self.target.scale_to_track_metric(
            "Invocations",
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            target_value=profile.target_invocations_per_instance,
            scale_out_cooldown=Duration.seconds(60),
            scale_in_cooldown=Duration.minutes(10),
        )
        if not encrypt_volume:
            acknowledge(
                self.endpoint_config,
                [
                    {
                        "id": "AwsSolutions-SM2",
                        "reason": "This instance type keeps the model on local NVMe instance storage, "
                        "encrypted by the hardware; SageMaker rejects a KmsKeyId for it.",
                    }
                ],
            )
        acknowledge(
            self.model,
            [
                {
                    "id": "AwsSolutions-SM1",
                    "reason": "The TEI container needs no private resource; outside a VPC "
                    "it leaves no network interfaces behind at teardown. "
                    "Access is IAM-only (InvokeEndpoint).",
                }
            ],
        )

    @property
    def arn(self) -> str:
        stack = Stack.of(self)
        return stack.format_arn(service="sagemaker", resource="endpoint", resource_name=self.endpoint_name)

    def _grant_runtime(self, region: str) -> None:
        grant_container_runtime(
            self.role,
            image_uri=self.image_uri,
            registry_account=self.image_uri.split(".", 1)[0],
            log_group_prefix="/aws/sagemaker/Endpoints",
        )
