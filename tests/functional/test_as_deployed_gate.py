"""The as-deployed reader and the HTTP API emulation on a small cloud assembly written here in the shape
CDK synthesizes (manifest.json + CloudFormation templates: AWS::Lambda::Function, AWS::ApiGatewayV2::*
with JWT or Lambda REQUEST authorizers, AWS::Cognito::UserPool with a PreTokenGenerationConfig, SSM
parameters and cross-stack exports). Authorizer behaviour checked: API Gateway developer guide, "JWT
authorizers" (401 without the identity source; iss/aud checked) and "Lambda authorizers for HTTP APIs"
(payload 2.0, simple responses: false -> 403; context -> requestContext.authorizer.lambda). The
Lambda authorizer is the real handler on real PostgreSQL/Redis."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from chatstack.local.as_deployed import LocalUrls, TemplateError, load_deployment, shared_environment
from chatstack.local.cognito import CognitoUserPool
from chatstack.local.http_api_gate import HttpApiGate
from chatstack.local.lambda_context import invoke, load_handler
from lambdas import wiring
from lambdas.adapters.auth import Identity
from lambdas.api.app import create_app
from lambdas.config import Settings
from lambdas.runtime import Deps, set_deps
from lambdas.services.api_keys import ApiKeyService
from tests.helpers.jwks import serve_jwks

REGION = "us-east-1"
ENV = {
    "CHATSTACK_ENVIRONMENT": "cloud",
    "CHATSTACK_AUTH_ISSUER": {"Fn::ImportValue": "identity:Issuer"},
    "CHATSTACK_AUTH_JWKS_URL": {"Fn::ImportValue": "identity:Jwks"},
    "CHATSTACK_AUTH_AUDIENCE": {"Fn::ImportValue": "identity:Client"},
    "CHATSTACK_QUEUE_URL": {"Ref": "Jobs"},
    "CHATSTACK_DATABASE_HOST": {"Fn::GetAtt": ["Proxy", "Endpoint"]},
    "CHATSTACK_DATABASE_SECRET_ARN": {"Ref": "DbSecret"},
}


def function(handler: str, memory: int, timeout: int, env: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"Type": "AWS::Lambda::Function", "Properties": {
        "Handler": handler, "MemorySize": memory, "Timeout": timeout, "Runtime": "python3.12",
        "Environment": {"Variables": env if env is not None else ENV}}}  # fmt: skip


def uri(logical: str) -> dict[str, Any]:
    return {"Fn::Join": ["", ["arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/",
                              {"Fn::GetAtt": [logical, "Arn"]}, "/invocations"]]}  # fmt: skip


def write_assembly(
    root: Path, *, rest_authorizer: str, trigger: str = "V2_0", env: dict[str, Any] | None = None
) -> Path:
    tenant = {"AttributeDataType": "String", "Mutable": True, "Name": "tenant"}
    pool_props: dict[str, Any] = {"Schema": [tenant]}
    if trigger:
        pool_props["LambdaConfig"] = {"PreTokenGenerationConfig": {
            "LambdaArn": {"Fn::GetAtt": ["PreToken", "Arn"]}, "LambdaVersion": trigger}}  # fmt: skip
    issuer = {"Fn::Join": ["", ["https://cognito-idp.us-east-1.", {"Ref": "AWS::URLSuffix"}, "/",
                                {"Ref": "Pool"}]]}  # fmt: skip
    identity = {"Resources": {
        "Pool": {"Type": "AWS::Cognito::UserPool", "Properties": pool_props},
        "Client": {"Type": "AWS::Cognito::UserPoolClient", "Properties": {"UserPoolId": {"Ref": "Pool"}}},
        "PreToken": function("lambdas.handlers.pre_token.handler", 128, 5, {}),
        "Issuer": {"Type": "AWS::SSM::Parameter", "Properties": {"Type": "String", "Value": issuer}},
        "Jwks": {"Type": "AWS::SSM::Parameter", "Properties": {"Type": "String", "Value": {
            "Fn::Join": ["", [{"Fn::GetAtt": ["Issuer", "Value"]}, "/.well-known/jwks.json"]]}}},
    }, "Outputs": {
        "I": {"Value": {"Fn::GetAtt": ["Issuer", "Value"]}, "Export": {"Name": "identity:Issuer"}},
        "J": {"Value": {"Fn::GetAtt": ["Jwks", "Value"]}, "Export": {"Name": "identity:Jwks"}},
        "C": {"Value": {"Ref": "Client"}, "Export": {"Name": "identity:Client"}},
    }}  # fmt: skip
    if rest_authorizer == "JWT":
        authorizer = {"AuthorizerType": "JWT", "IdentitySource": ["$request.header.Authorization"],
                      "JwtConfiguration": {"Issuer": {"Fn::ImportValue": "identity:Issuer"},
                                           "Audience": [{"Fn::ImportValue": "identity:Client"}]}}  # fmt: skip
        route_auth = "JWT"
    else:
        authorizer = {"AuthorizerType": "REQUEST", "AuthorizerUri": uri("HttpAuthorizer"),
                      "AuthorizerPayloadFormatVersion": "2.0", "EnableSimpleResponses": True}  # fmt: skip
        route_auth = "CUSTOM"
    api = {"Resources": {
        "Rest": function("lambdas.handlers.rest.handler", 1024, 29, env),
        "HttpAuthorizer": function("lambdas.handlers.http_authorizer.handler", 256, 10, env),
        "Connect": function("lambdas.handlers.connect.handler", 256, 10, env),
        "WsAuthorizer": function("lambdas.handlers.authorizer.handler", 256, 10, env),
        "Jobs": {"Type": "AWS::SQS::Queue", "Properties": {"FifoQueue": True}},
        "Proxy": {"Type": "AWS::RDS::DBProxy", "Properties": {}},
        "DbSecret": {"Type": "AWS::SecretsManager::Secret", "Properties": {}},
        "Ws": {"Type": "AWS::ApiGatewayV2::Api", "Properties": {"ProtocolType": "WEBSOCKET"}},
        "WsConnectIntegration": {"Type": "AWS::ApiGatewayV2::Integration", "Properties": {
            "ApiId": {"Ref": "Ws"}, "IntegrationUri": uri("Connect")}},
        "WsAuth": {"Type": "AWS::ApiGatewayV2::Authorizer", "Properties": {
            "ApiId": {"Ref": "Ws"}, "AuthorizerType": "REQUEST", "AuthorizerUri": uri("WsAuthorizer")}},
        "WsConnect": {"Type": "AWS::ApiGatewayV2::Route", "Properties": {
            "ApiId": {"Ref": "Ws"}, "RouteKey": "$connect", "AuthorizationType": "CUSTOM",
            "AuthorizerId": {"Ref": "WsAuth"},
            "Target": {"Fn::Join": ["", ["integrations/", {"Ref": "WsConnectIntegration"}]]}}},
        "Http": {"Type": "AWS::ApiGatewayV2::Api", "Properties": {"ProtocolType": "HTTP"}},
        "HttpIntegration": {"Type": "AWS::ApiGatewayV2::Integration", "Properties": {
            "ApiId": {"Ref": "Http"}, "IntegrationUri": {"Fn::GetAtt": ["Rest", "Arn"]},
            "PayloadFormatVersion": "2.0"}},
        "HttpAuth": {"Type": "AWS::ApiGatewayV2::Authorizer",
                     "Properties": {"ApiId": {"Ref": "Http"}, **authorizer}},
        "Proxy1": {"Type": "AWS::ApiGatewayV2::Route", "Properties": {
            "ApiId": {"Ref": "Http"}, "RouteKey": "ANY /v1/{proxy+}", "AuthorizationType": route_auth,
            "AuthorizerId": {"Ref": "HttpAuth"},
            "Target": {"Fn::Join": ["", ["integrations/", {"Ref": "HttpIntegration"}]]}}},
        "Health": {"Type": "AWS::ApiGatewayV2::Route", "Properties": {
            "ApiId": {"Ref": "Http"}, "RouteKey": "GET /healthz", "AuthorizationType": "NONE",
            "Target": {"Fn::Join": ["", ["integrations/", {"Ref": "HttpIntegration"}]]}}},
    }}  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    artifacts = {}
    for name, body in (("identity", identity), ("api", api)):
        (root / f"{name}.template.json").write_text(json.dumps(body))
        artifacts[name] = {"type": "aws:cloudformation:stack", "environment": f"aws://111111111111/{REGION}",
                           "properties": {"templateFile": f"{name}.template.json"}}  # fmt: skip
    (root / "manifest.json").write_text(json.dumps({"version": "48.0.0", "artifacts": artifacts}))
    return root


URLS = LocalUrls(base="http://127.0.0.1:8000", database_url="postgresql://local/db", redis_url="redis://local",
                 model_url="http://127.0.0.1:9000", queue_url="http://127.0.0.1:8000/sqs/000000000000/jobs.fifo",
                 sqs_endpoint_url="http://127.0.0.1:8000/sqs")  # fmt: skip


def test_functions_routes_authorizers_and_the_trigger_come_from_the_templates(tmp_path: Path) -> None:
    d = load_deployment(write_assembly(tmp_path, rest_authorizer="LAMBDA"))
    assert d.region == REGION
    assert (d.functions["rest_api"].spec.memory_mb, d.functions["rest_api"].spec.timeout_s) == (1024, 29)
    assert d.ws_routes == {"$connect": "connect"}
    assert d.ws_authorizer is not None and d.ws_authorizer.function == "authorizer"
    route = d.http_route("GET", "/v1/conversations")
    assert route is not None and route.authorizer is not None
    assert (route.authorizer.kind, route.authorizer.function, route.authorizer.simple_responses) == (
        "REQUEST", "http_authorizer", True)  # fmt: skip
    assert d.http_route("GET", "/healthz") is not None and d.http_route("GET", "/docs") is None
    assert d.user_pool is not None
    assert (d.user_pool.trigger_function, d.user_pool.trigger_version) == ("pre_token", "V2_0")
    assert d.user_pool.custom_attributes == ("custom:tenant",)


def test_references_resolve_through_exports_and_ssm_to_the_local_stand_ins(tmp_path: Path) -> None:
    d = load_deployment(write_assembly(tmp_path, rest_authorizer="JWT"))
    env, notes = shared_environment(d, URLS)
    assert env["CHATSTACK_AUTH_ISSUER"] == f"https://cognito-idp.us-east-1.amazonaws.com/{d.user_pool.pool_id}"  # type: ignore[union-attr]
    assert env["CHATSTACK_AUTH_JWKS_URL"] == (
        f"http://127.0.0.1:8000/cognito-idp/{d.user_pool.pool_id}/.well-known/jwks.json")  # type: ignore[union-attr]
    assert env["CHATSTACK_AUTH_AUDIENCE"] == d.user_pool.client_id  # type: ignore[union-attr]
    assert env["CHATSTACK_QUEUE_URL"] == URLS.queue_url and env["CHATSTACK_DATABASE_URL"] == URLS.database_url
    assert "CHATSTACK_DATABASE_SECRET_ARN" not in env and "CHATSTACK_DATABASE_HOST" not in env
    assert any(n.variable == "CHATSTACK_DATABASE_SECRET_ARN" and n.local is None for n in notes)
    jwt_authorizer = d.http_route("POST", "/v1/api-keys").authorizer  # type: ignore[union-attr]
    assert jwt_authorizer is not None and jwt_authorizer.issuer == env["CHATSTACK_AUTH_ISSUER"]


def test_a_resource_without_a_stand_in_is_named_not_guessed(tmp_path: Path) -> None:
    env = {**ENV, "CHATSTACK_TABLE": {"Ref": "Table"}}
    root = write_assembly(tmp_path, rest_authorizer="JWT", env=env)
    body = json.loads((root / "api.template.json").read_text())
    body["Resources"]["Table"] = {"Type": "AWS::DynamoDB::Table", "Properties": {}}
    (root / "api.template.json").write_text(json.dumps(body))
    with pytest.raises(TemplateError, match=r"Table \(AWS::DynamoDB::Table\) has no local stand-in"):
        shared_environment(load_deployment(root), URLS)


# ---- the HTTP API in front of the real REST app ---------------------------------------------------
@pytest.fixture
def pool(tmp_path: Path) -> CognitoUserPool:
    trigger = load_handler(wiring.PRE_TOKEN)
    p = CognitoUserPool(tmp_path / "cognito", trigger=lambda e: invoke(trigger, e))
    p.create_user("alice", {"custom:tenant": f"t-{uuid.uuid4().hex[:8]}"}, password="Pw-123456789!")
    p.add_to_group("alice", "chat")
    return p


@pytest.fixture
def deps(pg_url: str, redis_url: str, pool: CognitoUserPool) -> Iterator[Deps]:
    with serve_jwks(pool.jwks()["keys"]) as jwks:
        d = Deps(Settings(environment="test", database_url=pg_url, redis_url=redis_url,
                          auth_issuer=pool.issuer, auth_audience=pool.client_id, auth_algorithms="RS256",
                          auth_jwks_url=jwks.url))  # fmt: skip
        set_deps(d)
        yield d
        set_deps(None)
        d.db.close()


def gate(root: Path, pool: CognitoUserPool) -> httpx.AsyncClient:
    from jwt import PyJWK

    deployment = load_deployment(root, region=REGION)
    # The templates' pool is this stand-in: same issuer, same client id.
    for route in deployment.http_routes:
        if route.authorizer is not None and route.authorizer.kind == "JWT":
            object.__setattr__(route.authorizer, "issuer", pool.issuer)
            object.__setattr__(route.authorizer, "audiences", (pool.client_id,))
    handlers = {name: load_handler(f.spec) for name, f in deployment.functions.items()}
    app = HttpApiGate(create_app(), deployment, lambda name, event: invoke(handlers[name], event),
                      lambda kid: PyJWK(pool.public_jwk).key)  # fmt: skip
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.local")


async def test_a_jwt_authorizer_refuses_an_api_key_before_the_app_runs(
    tmp_path: Path, pool: CognitoUserPool, deps: Deps
) -> None:
    # Defect 4 of issue 10: a caller with only x-api-key never reaches the code behind a JWT authorizer.
    creator = Identity(tenant_id="t-keys", user_id="root", scopes=frozenset({"chat"}))
    key = ApiKeyService(deps).create(creator, name="svc", scopes=["chat"], expires_in_days=None).key
    token = pool.sign_in("alice", "Pw-123456789!").access_token
    async with gate(write_assembly(tmp_path / "a", rest_authorizer="JWT"), pool) as client:
        refused = await client.get("/v1/conversations", headers={"x-api-key": key})
        assert refused.status_code == 401 and refused.json() == {"message": "Unauthorized"}
        allowed = await client.get("/v1/conversations", headers={"authorization": f"Bearer {token}"})
        assert allowed.status_code == 200
        assert (await client.get("/docs")).status_code == 404  # no such route on the HTTP API


async def test_the_lambda_authorizer_admits_keys_and_tokens_and_the_app_uses_its_context(
    tmp_path: Path, pool: CognitoUserPool, deps: Deps
) -> None:
    creator = Identity(tenant_id=f"t-{uuid.uuid4().hex[:8]}", user_id="root", scopes=frozenset({"chat"}))
    key = ApiKeyService(deps).create(creator, name="svc", scopes=["chat"], expires_in_days=None).key
    token = pool.sign_in("alice", "Pw-123456789!").access_token
    async with gate(write_assembly(tmp_path / "b", rest_authorizer="LAMBDA"), pool) as client:
        for headers in ({"x-api-key": key}, {"authorization": f"Bearer {key}"},
                        {"authorization": f"Bearer {token}"}):
            response = await client.get("/v1/conversations", headers=headers)
            assert response.status_code == 200, (headers, response.text)
        denied = await client.get("/v1/conversations")
        assert denied.status_code == 403 and denied.json() == {"message": "Forbidden"}
        assert (await client.get("/healthz")).status_code in (200, 503)  # open route: no authorizer


@pytest.mark.parametrize("version", ["V2_0", "V1_0", ""])
def test_sign_in_follows_the_trigger_configuration_of_the_templates(tmp_path: Path, version: str) -> None:
    # A V1_0 event cannot change access tokens (the trigger refuses it); no trigger leaves Cognito's claims.
    from chatstack.local.as_deployed_mode import AsDeployedMode
    from chatstack.local.cognito import SignInRefused

    mode = AsDeployedMode(write_assembly(tmp_path / "c", rest_authorizer="LAMBDA", trigger=version), tmp_path)
    trigger = load_handler(wiring.PRE_TOKEN)
    user_pool = mode.user_pool({"pre_token": lambda event: invoke(trigger, event)})
    assert user_pool is not None
    user_pool.create_user("dora", {"custom:tenant": "acme"}, password="Pw-123456789!")
    user_pool.add_to_group("dora", "chat")
    if version == "V1_0":
        with pytest.raises(SignInRefused, match="V2_0"):
            user_pool.sign_in("dora", "Pw-123456789!")
        return
    token = user_pool.sign_in("dora", "Pw-123456789!").access_token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert ("tenant" in claims) == (version == "V2_0")


def test_the_environment_of_the_templates_keeps_how_up_runs_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The templates' variables replace the local ones, but how `up` runs its children (liveness
    probes, function timeouts for tests) is local plumbing the templates never set: it stays, so
    CHATSTACK_LIVENESS_FAILURES=0 turns the probes off with --as-deployed too."""
    import os

    from chatstack.local.as_deployed_mode import AsDeployedMode

    root = write_assembly(tmp_path / "cdk.out", rest_authorizer="JWT")
    # apply_environment rewrites the process's environment: a copy, given back after the test.
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setenv("CHATSTACK_LIVENESS_FAILURES", "0")
    monkeypatch.setenv("CHATSTACK_FUNCTION_TIMEOUTS", "worker=8")
    monkeypatch.setenv("CHATSTACK_SYSTEM_PROMPT", "a local setting the templates do not set")
    AsDeployedMode(root, tmp_path / "data").apply_environment(URLS)
    assert os.environ["CHATSTACK_LIVENESS_FAILURES"] == "0"
    assert os.environ["CHATSTACK_FUNCTION_TIMEOUTS"] == "worker=8"
    assert "CHATSTACK_SYSTEM_PROMPT" not in os.environ  # the rest is the templates'
