"""Is the model endpoint serving? `GET /ping` on an LMI container (local or by hand), or the
SageMaker endpoint's status (DescribeEndpoint) in the cloud."""

from __future__ import annotations

import boto3
import urllib3

from lambdas.config import Settings

_http = urllib3.PoolManager(num_pools=2, timeout=urllib3.Timeout(connect=2, read=3), retries=False)


def model_ready(settings: Settings) -> bool:
    if settings.model_transport == "http":
        base = settings.model_endpoint.rsplit("/invocations", 1)[0]
        return _http.request("GET", base + "/ping").status == 200
    client = boto3.client("sagemaker", region_name=settings.region)
    status = client.describe_endpoint(EndpointName=settings.model_endpoint)["EndpointStatus"]
    return status in ("InService", "Updating")
