"""The APIs of every region: routes from the wiring module, authorizers, the queue consumer, grants."""

from __future__ import annotations

from typing import Any

import pytest

from cdk.constructs.chat_functions import lambda_handler_path
from cdk.stacks.api import REGIONAL_FUNCTIONS
from infra_tests.conftest import Synth, Template
from infra_tests.helpers import as_list, referenced_ids, render, statements, strings
from lambdas import wiring


def _functions_by_handler(synth: Synth, api: Template) -> dict[str, str]:
    return {
        r["Properties"]["Handler"]: logical_id
        for logical_id, r in synth.resources(api, "AWS::Lambda::Function").items()
        if "Handler" in r["Properties"] and r["Properties"]["Handler"].startswith("lambdas.")
    }


def _role_policies(synth: Synth, api: Template, function_id: str) -> list[dict[str, Any]]:
    role_id = api["Resources"][function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    return [
        s
        for p in synth.resources(api, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
        for s in statements(p)
    ]


@pytest.fixture(params=["primary", "secondary"])
def region(request: pytest.FixtureRequest, synth: Synth) -> str:
    return synth.config.primary_region if request.param == "primary" else synth.config.secondary_regions[0]


def test_every_wiring_route_reaches_its_function_and_only_connect_is_authorized(
    synth: Synth, region: str
) -> None:
    api = synth.stack(region, "api")
    functions = _functions_by_handler(synth, api)
    integrations = synth.resources(api, "AWS::ApiGatewayV2::Integration")
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in synth.resources(api, "AWS::ApiGatewayV2::Route").values()
        if "$request" not in str(r["Properties"]["RouteKey"]) and " /" not in r["Properties"]["RouteKey"]
    }
    assert set(routes) == {route.key for route in wiring.ROUTES}
    ((authorizer_id, authorizer),) = {
        k: v
        for k, v in synth.resources(api, "AWS::ApiGatewayV2::Authorizer").items()
        if v["Properties"]["AuthorizerType"] == "REQUEST"
        and "AuthorizerPayloadFormatVersion" not in v["Properties"]  # the HTTP API's authorizer has one
    }.items()
    for route in wiring.ROUTES:
        props = routes[route.key]
        (integration_id,) = referenced_ids(props["Target"])
        target = referenced_ids(integrations[integration_id]["Properties"]["IntegrationUri"])
        assert target == {functions[lambda_handler_path(route.function)]}, route.key
        if route.key == "$connect":
            assert props["AuthorizationType"] == "CUSTOM" and props["AuthorizerId"] == {"Ref": authorizer_id}
        else:
            assert props["AuthorizationType"] == "NONE" and "AuthorizerId" not in props, route.key
    assert referenced_ids(authorizer["Properties"]["AuthorizerUri"]) == {
        functions[lambda_handler_path(wiring.AUTHORIZER)]
    }
    # Every declared identity source must be present or API Gateway answers 401 unasked; a browser
    # sends ?token= and a service x-api-key, so none is declared and the authorizer decides.
    assert "IdentitySource" not in authorizer["Properties"]


def test_every_wiring_function_is_deployed_with_its_sizing_on_arm64_python(synth: Synth, region: str) -> None:
    api = synth.stack(region, "api")
    deployed = {
        r["Properties"]["Handler"]: r["Properties"]
        for r in synth.resources(api, "AWS::Lambda::Function").values()
        if r["Properties"].get("Handler", "").startswith("lambdas.")
    }
    # The Cognito trigger is deployed beside its user pool (identity stack), not per region.
    assert set(deployed) == {lambda_handler_path(f) for f in REGIONAL_FUNCTIONS}
    # ...and the failover function only in secondary regions' observability stacks (test_failover).
    assert set(REGIONAL_FUNCTIONS) == set(wiring.FUNCTIONS) - {wiring.PRE_TOKEN, wiring.FAILOVER}
    for spec in REGIONAL_FUNCTIONS:
        props = deployed[lambda_handler_path(spec)]
        assert props["MemorySize"] == spec.memory_mb and props["Timeout"] == spec.timeout_s
        assert props["Architectures"] == ["arm64"] and props["Runtime"] == "python3.12"
        assert props["VpcConfig"]["SubnetIds"]
        env = props["Environment"]["Variables"]
        assert env["CHATSTACK_ENVIRONMENT"] == "cloud" and env["CHATSTACK_REGION"] == region
        assert env["CHATSTACK_MODEL_TRANSPORT"] == "sagemaker"
        assert env["CHATSTACK_MODEL_FALLBACK_REGION"] == synth.config.fallback_region(region)
        assert env["CHATSTACK_REDIS_URL"]["Fn::Join"][1][0] == "rediss://"
        for name in (
            "CHATSTACK_DATABASE_USER",
            "CHATSTACK_QUEUE_URL",
            "CHATSTACK_CONNECTIONS_URL",
            "CHATSTACK_AUTH_ISSUER",
            "CHATSTACK_AUTH_AUDIENCE",
            "CHATSTACK_OPENSEARCH_ENDPOINT",
        ):
            assert env[name], name


def test_the_websocket_stage_is_throttled_and_logged(synth: Synth, region: str) -> None:
    api = synth.stack(region, "api")
    (stage,) = [
        s["Properties"]
        for s in synth.resources(api, "AWS::ApiGatewayV2::Stage").values()
        if s["Properties"]["StageName"] == wiring.STAGE_NAME
    ]
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] == synth.config.api.throttle_rate_limit
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] == synth.config.api.throttle_burst_limit
    assert (
        stage["AccessLogSettings"]["DestinationArn"]
        and "$context.connectionId" in stage["AccessLogSettings"]["Format"]
    )


def test_the_worker_consumes_the_fifo_queue_in_concurrent_batches_with_partial_failures(
    synth: Synth, region: str
) -> None:
    api = synth.stack(region, "api")
    worker_id = _functions_by_handler(synth, api)[lambda_handler_path(wiring.WORKER)]
    (mapping,) = synth.resources(api, "AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["FunctionName"] == {"Ref": worker_id}
    assert props["BatchSize"] == wiring.JOBS_QUEUE.batch_size
    assert props["ScalingConfig"]["MaximumConcurrency"] == wiring.JOBS_QUEUE.max_concurrency
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue_id = props["EventSourceArn"]["Fn::GetAtt"][0]
    queue = api["Resources"][queue_id]["Properties"]
    assert queue["QueueName"] == wiring.JOBS_QUEUE.name
    assert queue["VisibilityTimeout"] == wiring.JOBS_QUEUE.visibility_timeout_s
    assert queue["RedrivePolicy"]["maxReceiveCount"] == wiring.JOBS_QUEUE.max_receive_count


def test_the_rest_api_requires_credentials_except_on_the_health_routes(synth: Synth, region: str) -> None:
    """The authorizer's kind and settings are checked against AWS's rules in test_aws_rules."""
    api = synth.stack(region, "api")
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in synth.resources(api, "AWS::ApiGatewayV2::Route").values()
        if " /" in r["Properties"]["RouteKey"]
    }
    assert routes["ANY /v1/{proxy+}"]["AuthorizationType"] == "CUSTOM"
    assert routes["GET /healthz"]["AuthorizationType"] == "NONE"
    assert routes["GET /readyz"]["AuthorizationType"] == "NONE"
    assert not [
        a
        for a in synth.resources(api, "AWS::ApiGatewayV2::Authorizer").values()
        if a["Properties"]["AuthorizerType"] == "JWT"
    ]


def test_function_policies_name_only_this_deployments_resources(synth: Synth, region: str) -> None:
    api = synth.stack(region, "api")
    functions = _functions_by_handler(synth, api)
    account, name = synth.config.account, synth.config.name
    websocket_id = next(
        iter(
            synth.resources(api, "AWS::ApiGatewayV2::Api").keys()
            & {k for k, v in api["Resources"].items() if v["Properties"].get("ProtocolType") == "WEBSOCKET"}
        )
    )
    posting = {
        lambda_handler_path(f)
        for f in (
            wiring.SEND_MESSAGE,
            wiring.RESUME,
            wiring.CANCEL,
            wiring.PING,
            wiring.DEFAULT,
            wiring.WORKER,
        )
    }
    embedders = {lambda_handler_path(wiring.WORKER), lambda_handler_path(wiring.REST_API)}
    senders: set[str] = set()
    describers: dict[str, set[str]] = {}
    for handler, function_id in functions.items():
        for statement in _role_policies(synth, api, function_id):
            actions = set(as_list(statement["Action"]))
            resources = as_list(statement["Resource"])
            if resources == ["*"]:
                assert actions <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}, (handler, actions)
            if "execute-api:ManageConnections" in actions:
                assert handler in posting, handler
                (arn,) = resources
                assert referenced_ids(arn) == {websocket_id}
                assert f"/{wiring.STAGE_NAME}/*/@connections/*" in "".join(strings(arn))
            embedding_endpoint = f"arn:aws:sagemaker:{region}:{account}:endpoint/{name}-embed"
            if actions == {"sagemaker:InvokeEndpoint"} and [render(a) for a in resources] == [
                embedding_endpoint
            ]:
                # Only the functions that embed (queries in the worker, chunks in REST ingestion).
                assert handler in embedders, handler
            elif actions & {"sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"}:
                assert handler == lambda_handler_path(wiring.WORKER)
                regions = {region, synth.config.fallback_region(region)}
                expected = {f"arn:aws:sagemaker:{r}:{account}:endpoint/{name}-llm" for r in regions}
                assert {render(a) for a in resources} == expected
            if "sqs:SendMessage" in actions:
                senders.add(handler)
            if "sagemaker:DescribeEndpoint" in actions:
                describers.setdefault(handler, set()).update(render(r) for r in resources)
            if "aoss:APIAccessAll" in actions:
                assert handler in embedders, handler
                own_data_stack = f"<import {name}-{region}-data:"
                if handler == lambda_handler_path(wiring.WORKER):
                    assert all(render(r).startswith(own_data_stack) for r in resources), resources
                else:
                    # Ingestion: this region's collection, and every other region's read from its
                    # SSM parameter at deploy time (cdk/constructs/regional_value.py).
                    rendered = [render(r) for r in resources]
                    assert len(rendered) == len(synth.config.regions), rendered
                    assert sum(r.startswith(own_data_stack) for r in rendered) == 1, rendered
                    others = [r for r in resources if not render(r).startswith(own_data_stack)]
                    for other in others:
                        reader, _ = other["Fn::GetAtt"]
                        assert api["Resources"][reader]["Type"] == "Custom::AWS", reader
                        assert "/collection-arn" in str(api["Resources"][reader]["Properties"]["Create"])
            if "secretsmanager:GetSecretValue" in actions:
                for resource in resources:
                    text = render(resource)
                    own = (
                        f":secretsmanager:{region}:{account}:secret:{name}/",
                        f"<import {name}-{region}-data:",
                        # the local replica of the primary's database secret (same name-suffix, this region)
                        f":secretsmanager:{region}:{account}:secret:<ExportsReader",
                    )
                    assert any(part in text for part in own), text
    # Exactly the functions that enqueue a generation job: sendMessage, the OpenAI-compatible
    # completions of the REST function (the same pipeline), and resume and the sweeper, which enqueue
    # again a request whose worker died. Each also needs the queue key's data-key actions (SSE-KMS:
    # "Configuring AWS KMS permissions", SQS Developer Guide), which CDK's send grant adds.
    assert senders == {
        lambda_handler_path(f) for f in (wiring.SEND_MESSAGE, wiring.REST_API, wiring.RESUME, wiring.SWEEPER)
    }
    # /healthz (REST) reads this region's endpoint, and the fallback region's when this one does not
    # serve (lambdas/adapters/model_health.py).
    regions = {region, synth.config.fallback_region(region)}
    llm = {f"arn:aws:sagemaker:{r}:{account}:endpoint/{name}-llm" for r in regions}
    assert describers == {lambda_handler_path(wiring.REST_API): llm}
