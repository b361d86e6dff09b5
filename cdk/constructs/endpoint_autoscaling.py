"""Target-tracking autoscaling of the LMI endpoint on SageMaker's high-resolution concurrency metric.

Concurrent requests (in flight plus queued in the container, a streamed request counting until its
last token) is what saturates an LLM server; it is emitted every 10 s, so scale-out reacts in
seconds rather than minutes. With inference components and scale-to-zero, target tracking cannot
leave zero, so a step policy driven by `NoCapacityInvocationFailures` adds the first copy.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from cdk.constructs.lmi_endpoint import VARIANT, LmiEndpoint

VARIANT_METRIC = appscaling.PredefinedMetric.SAGEMAKER_VARIANT_CONCURRENT_REQUESTS_PER_MODEL_HIGH_RESOLUTION
COMPONENT_METRIC = (
    appscaling.PredefinedMetric.SAGEMAKER_INFERENCE_COMPONENT_CONCURRENT_REQUESTS_PER_COPY_HIGH_RESOLUTION
)


class EndpointAutoscaling(Construct):
    """Scales instances (endpoint variant) or copies (inference component) between min and max."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        endpoint: LmiEndpoint,
        min_capacity: int,
        max_capacity: int,
        target_concurrency: int,
    ) -> None:
        super().__init__(scope, id)
        component = endpoint.inference_component
        if component is None:
            resource_id = f"endpoint/{endpoint.endpoint_name}/variant/{VARIANT}"
            dimension = "sagemaker:variant:DesiredInstanceCount"
            metric = VARIANT_METRIC
        else:
            resource_id = f"inference-component/{component.inference_component_name}"
            dimension = "sagemaker:inference-component:DesiredCopyCount"
            metric = COMPONENT_METRIC
        self.target = appscaling.ScalableTarget(
            self,
            "Target",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=resource_id,
            scalable_dimension=dimension,
            min_capacity=min_capacity,
            max_capacity=max_capacity,
        )
        self.target.node.add_dependency(component if component is not None else endpoint.endpoint)
        self.policy = self.target.scale_to_track_metric(
            "Concurrency",
            predefined_metric=metric,
            target_value=target_concurrency,
            scale_out_cooldown=Duration.seconds(60),
            scale_in_cooldown=Duration.minutes(10),
        )
        if component is not None and min_capacity == 0:
            no_capacity = cloudwatch.Metric(
                namespace="AWS/SageMaker",
                metric_name="NoCapacityInvocationFailures",
                dimensions_map={"InferenceComponentName": str(component.inference_component_name)},
                statistic="Maximum",
                period=Duration.minutes(1),
            )
            self.target.scale_on_metric(
                "FromZero",
                metric=no_capacity,
                scaling_steps=[
                    appscaling.ScalingInterval(upper=0, change=0),
                    appscaling.ScalingInterval(lower=1, change=1),
                ],
                adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
                cooldown=Duration.minutes(3),
            )
