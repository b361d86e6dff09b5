"""Is the model served? `GET /ping` on an LMI container (local or by hand), or the SageMaker
endpoint's status (DescribeEndpoint) in the cloud.

The primary region's `/healthz` reads this, and a failed `/healthz` moves traffic to the secondary and,
three minutes on, promotes the secondary's Aurora cluster with `AllowDataLoss`. So "not served" must
mean that no answer can be had: an endpoint under SageMaker's own maintenance, or rolling back a
failed scaling, still answers, and so does the fallback region's endpoint, which the worker uses when
this region's fails (lambdas/adapters/model.py).
"""

from __future__ import annotations

import boto3
import urllib3

from lambdas.config import Settings

_http = urllib3.PoolManager(num_pools=2, timeout=urllib3.Timeout(connect=2, read=3), retries=False)

# DescribeEndpoint's EndpointStatus values under which the endpoint takes requests (the SageMaker API
# reference): InService; Updating (an update deploys beside the serving fleet); SystemUpdating
# ("maintenance ... does not change ... model, instance type, or instance count"); RollingBack (a
# failed autoscaling change rolling back, "returns to an InService status"); UpdateRollbackFailed
# ("Your endpoint is in service with a mix of the old and new endpoint configurations"). Not served:
# OutOfService, Creating, Deleting, Failed.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeEndpoint.html
SERVING_STATUSES = frozenset(
    {"InService", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed"}
)


def endpoint_serving(settings: Settings, endpoint: str, region: str) -> bool:
    if settings.model_transport == "http":
        base = endpoint.rsplit("/invocations", 1)[0]
        return _http.request("GET", base + "/ping").status == 200
    client = boto3.client("sagemaker", region_name=region)
    return client.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] in SERVING_STATUSES


def model_ready(settings: Settings) -> bool:
    """This region's endpoint serves, or, when it does not, the fallback region's does."""
    own = (settings.model_endpoint, settings.region)
    fallback = (settings.model_fallback_endpoint, settings.model_fallback_region or settings.region)
    other = fallback if fallback[0] and fallback != own else None  # one region: nowhere else to go
    try:
        if endpoint_serving(settings, *own):
            return True
    except Exception:
        if other is None:
            raise  # the health check reports why
    return other is not None and endpoint_serving(settings, *other)
