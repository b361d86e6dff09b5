"""SageMaker real-time endpoint running the LMI (vLLM) container, configured from a model profile.

The container's environment is exactly `profile.render_env()` of the profile staged at the
region's weights (an s3:// prefix when the config stages them: no hub download and no HF token);
the image URI comes from the sagemaker SDK's offline table for this region (registry accounts
differ by region). The production variant names the hosting AMI whose NVIDIA driver supports the
image's CUDA version (cdk/gpu_drivers.py): the default driver on ml.g5 is older than current LMI
images. With inference components the endpoint hosts one component whose copies scale, down to
zero when asked.

Not in the VPC on purpose: the container needs no private resource, reads S3 through SageMaker's
network, and an endpoint in a VPC leaves network interfaces that outlive teardown.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from cdk.constructs.sagemaker_container import container_model, container_role, grant_container_runtime
from cdk.gpu_drivers import inference_ami_for
from cdk.nag import acknowledge, wildcard
from sagemaker_containers.profiles import ModelProfile

VARIANT = "AllTraffic"
_COLON = ArnFormat.COLON_RESOURCE_NAME


class LmiEndpoint(Construct):
    """Model + EndpointConfig + Endpoint (and an InferenceComponent when `use_inference_components`)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        profile: ModelProfile,
        endpoint_name: str,
        use_inference_components: bool,
        min_instances: int,
        weights_uri: str | None = None,
        ami_version: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        region = Stack.of(self).region
        if weights_uri is not None and weights_uri != profile.model_id:
            profile = profile.staged_at(weights_uri)
        self.profile = profile
        self.endpoint_name = endpoint_name
        self.image_uri = profile.image_uri(region)
        self.ami_version = ami_version or inference_ami_for(self.image_uri)
        self.environment = profile.render_env()
        self.role = container_role(
            self, description="LMI container: pull its image, write logs and metrics, read model weights"
        )
        self._grant_runtime(region)
        self.model = container_model(
            self, role=self.role, image_uri=self.image_uri, environment=self.environment
        )
        variant = sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=VARIANT,
            instance_type=profile.instance_type,
            initial_instance_count=max(1, profile.instance_count),
            model_name=None if use_inference_components else self.model.attr_model_name,
            initial_variant_weight=1.0,
            inference_ami_version=self.ami_version,
            container_startup_health_check_timeout_in_seconds=profile.container_startup_timeout_s,
            model_data_download_timeout_in_seconds=profile.model_data_download_timeout_s,
            routing_config=sagemaker.CfnEndpointConfig.RoutingConfigProperty(
                routing_strategy="LEAST_OUTSTANDING_REQUESTS"
            ),
            managed_instance_scaling=sagemaker.CfnEndpointConfig.ManagedInstanceScalingProperty(
                status="ENABLED", min_instance_count=min_instances, max_instance_count=profile.max_instances
            )
            if use_inference_components
            else None,
        )
        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            production_variants=[variant],
            execution_role_arn=self.role.role_arn if use_inference_components else None,
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=endpoint_name,
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
        )
        self.inference_component: sagemaker.CfnInferenceComponent | None = None
        if use_inference_components:
            self.inference_component = sagemaker.CfnInferenceComponent(
                self,
                "Component",
                inference_component_name=f"{endpoint_name}-ic",
                endpoint_name=self.endpoint.attr_endpoint_name,
                variant_name=VARIANT,
                specification=sagemaker.CfnInferenceComponent.InferenceComponentSpecificationProperty(
                    model_name=self.model.attr_model_name,
                    compute_resource_requirements=sagemaker.CfnInferenceComponent.InferenceComponentComputeResourceRequirementsProperty(
                        number_of_accelerator_devices_required=profile.tensor_parallel_degree,
                        min_memory_required_in_mb=1024,
                    ),
                    startup_parameters=sagemaker.CfnInferenceComponent.InferenceComponentStartupParametersProperty(
                        container_startup_health_check_timeout_in_seconds=profile.container_startup_timeout_s,
                        model_data_download_timeout_in_seconds=profile.model_data_download_timeout_s,
                    ),
                ),
                runtime_config=sagemaker.CfnInferenceComponent.InferenceComponentRuntimeConfigProperty(
                    copy_count=max(1, min_instances)
                ),
            )
        acknowledge(
            self.endpoint_config,
            [
                {
                    "id": "AwsSolutions-SM2",
                    "reason": "GPU hosting instances keep the model on local NVMe "
                    "instance storage, encrypted by the hardware; SageMaker rejects a KmsKeyId for them.",
                },
            ],
        )
        acknowledge(
            self.model,
            [
                {
                    "id": "AwsSolutions-SM1",
                    "reason": "The container needs no private resource; outside a VPC "
                    "it leaves no network interfaces behind at teardown. "
                    "Access is IAM-only (InvokeEndpoint).",
                }
            ],
        )

    @property
    def registry_account(self) -> str:
        return self.image_uri.split(".", 1)[0]

    def _grant_runtime(self, region: str) -> None:
        stack = Stack.of(self)
        extra: list[dict[str, Any]] = []
        if self.profile.model_id.startswith("s3://"):
            bucket, _, prefix = self.profile.model_id.removeprefix("s3://").partition("/")
            self.role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:GetObject"], resources=[f"arn:{stack.partition}:s3:::{bucket}/{prefix}*"]
                )
            )
            self.role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"], resources=[f"arn:{stack.partition}:s3:::{bucket}"]
                )
            )
            extra.append(
                {
                    "id": wildcard(
                        f"Resource::arn:<AWS::Partition>:s3:::{self.profile.model_id.removeprefix('s3://')}*"
                    ),
                    "reason": "The container reads every object under the profile's model prefix.",
                }
            )
        grant_container_runtime(
            self.role,
            image_uri=self.image_uri,
            registry_account=self.registry_account,
            log_group_prefix="/aws/sagemaker",
            extra_acknowledgements=extra,
        )
