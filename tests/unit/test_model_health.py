"""What `/healthz` calls a served model (lambdas/adapters/model_health.py), through boto3 exactly as in
the cloud against botocore's Stubber, which validates each DescribeEndpoint request and answer
against SageMaker's service model. Contract checked: DescribeEndpoint's EndpointStatus values and
what each means for traffic (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeEndpoint.html).

Why it matters: a failing `/healthz` in the primary region moves traffic to the secondary and then
promotes its database with AllowDataLoss (docs/deploy.md), so SageMaker's own maintenance or a
rolled-back scaling step must not read as an outage."""

from __future__ import annotations

from typing import Any

import boto3
import botocore.session
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from lambdas.adapters import model_health
from lambdas.adapters.model_health import SERVING_STATUSES, model_ready
from lambdas.config import Settings

HERE, OTHER = "us-east-1", "us-west-2"
NOT_SERVING = {"OutOfService", "Creating", "Deleting", "Failed"}


class Endpoints:
    """One stubbed SageMaker client per region, handed out where the code asks boto3 for one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.clients: dict[str, Any] = {}
        self.stubs: dict[str, Stubber] = {}
        for region in (HERE, OTHER):
            client = boto3.client("sagemaker", region_name=region, aws_access_key_id="x",
                                  aws_secret_access_key="x")
            self.clients[region], self.stubs[region] = client, Stubber(client)
            self.stubs[region].activate()
        monkeypatch.setattr(model_health.boto3, "client", self.client)

    def client(self, service: str, region_name: str) -> Any:
        assert service == "sagemaker"
        return self.clients[region_name]

    def status(self, region: str, name: str, status: str) -> None:
        self.stubs[region].add_response("describe_endpoint", {
            "EndpointName": name, "EndpointArn": f"arn:aws:sagemaker:{region}:111111111111:endpoint/{name}",
            "EndpointStatus": status, "CreationTime": "2026-11-29T00:00:00Z",
            "LastModifiedTime": "2026-11-29T00:00:00Z",
        }, {"EndpointName": name})

    def refuse(self, region: str) -> None:
        self.stubs[region].add_client_error("describe_endpoint", "ThrottlingException", "Rate exceeded")

    def done(self) -> None:
        for stub in self.stubs.values():
            stub.assert_no_pending_responses()


def settings(fallback_region: str = OTHER) -> Settings:
    return Settings(environment="test", region=HERE, model_transport="sagemaker", model_endpoint="chat-llm",
                    model_fallback_endpoint="chat-llm", model_fallback_region=fallback_region)


def test_every_documented_status_is_classified() -> None:
    """A status SageMaker adds later fails here until someone decides whether it serves."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    documented = set(model.operation_model("DescribeEndpoint").output_shape.members["EndpointStatus"].enum)
    assert documented == SERVING_STATUSES | NOT_SERVING
    serving = {"SystemUpdating", "RollingBack", "UpdateRollbackFailed", "InService", "Updating"}
    assert serving == SERVING_STATUSES


@pytest.mark.parametrize("status", sorted(SERVING_STATUSES | NOT_SERVING))
def test_one_region_reads_its_endpoints_status(monkeypatch: pytest.MonkeyPatch, status: str) -> None:
    endpoints = Endpoints(monkeypatch)
    endpoints.status(HERE, "chat-llm", status)
    assert model_ready(settings(fallback_region=HERE)) is (status in SERVING_STATUSES)
    endpoints.done()  # asked once: the fallback of a one-region deployment is the same endpoint


def test_when_this_regions_endpoint_is_down_the_fallback_regions_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoints = Endpoints(monkeypatch)
    endpoints.status(HERE, "chat-llm", "OutOfService")
    endpoints.status(OTHER, "chat-llm", "InService")
    assert model_ready(settings()) is True  # the worker answers from the fallback region
    endpoints.status(HERE, "chat-llm", "Failed")
    endpoints.status(OTHER, "chat-llm", "Creating")
    assert model_ready(settings()) is False
    endpoints.refuse(HERE)
    endpoints.status(OTHER, "chat-llm", "InService")
    assert model_ready(settings()) is True
    endpoints.done()


def test_an_unanswered_status_without_a_fallback_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints = Endpoints(monkeypatch)
    endpoints.refuse(HERE)
    with pytest.raises(ClientError):
        model_ready(settings(fallback_region=HERE))
    endpoints.done()


def test_a_served_endpoint_does_not_ask_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints = Endpoints(monkeypatch)
    endpoints.status(HERE, "chat-llm", "SystemUpdating")
    assert model_ready(settings()) is True
    endpoints.done()
