"""Sign-in through the Cognito stand-in and the HTTP API's Lambda authorizer, on real PostgreSQL/Redis.

Contracts checked: Cognito's token shapes and the V2_0 pre-token trigger (Cognito developer guide,
"Understanding user pool JSON web tokens", "Pre token generation Lambda trigger"), reached with boto3's
`cognito-idp` client exactly as in the cloud; API Gateway HTTP API Lambda authorizers, payload format
2.0 with simple responses (API Gateway developer guide, "Working with AWS Lambda authorizers for HTTP
APIs"; fixture tests/fixtures/events/apigw_http_v2_authorizer_request.json), whose context reaches the
integration as `requestContext.authorizer.lambda`."""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import jwt
import pytest
import uvicorn
from botocore.exceptions import ClientError
from starlette.applications import Starlette

from chatstack.local.cognito import CognitoUserPool, routes
from chatstack.local.lambda_context import invoke, load_handler
from lambdas import wiring
from lambdas.adapters.auth import Identity, JwtVerifier
from lambdas.config import Settings
from lambdas.errors import Unauthorized
from lambdas.runtime import Deps, set_deps
from lambdas.services.api_keys import ApiKeyService
from tests.helpers.jwks import serve_jwks

EVENTS = Path(__file__).parents[1] / "fixtures/events"
AUTHORIZER_EVENT: dict[str, Any] = json.loads((EVENTS / "apigw_http_v2_authorizer_request.json").read_text())
PASSWORD = "Correct-Horse-9-battery"


@pytest.fixture(scope="module")
def cognito(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CognitoUserPool, str]]:
    """The stand-in served over HTTP (its API and JWKS), with the real trigger handler wired in."""
    trigger = load_handler(wiring.PRE_TOKEN)
    pool = CognitoUserPool(tmp_path_factory.mktemp("cognito"), trigger=lambda e: invoke(trigger, e))
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=routes(pool)), port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield pool, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


def idp(base: str) -> Any:
    return boto3.client("cognito-idp", endpoint_url=base + "/cognito-idp", region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local")


def sign_up(pool: CognitoUserPool, base: str, tenant: str | None, groups: tuple[str, ...]) -> str:
    """An administrator creates the user as an operator would (docs/identity.md), returns the name."""
    name = f"u-{uuid.uuid4().hex[:8]}"
    client = idp(base)
    attributes = [{"Name": "email", "Value": f"{name}@example.com"}]
    if tenant is not None:
        attributes.append({"Name": "custom:tenant", "Value": tenant})
    client.admin_create_user(UserPoolId=pool.pool_id, Username=name, UserAttributes=attributes)
    client.admin_set_user_password(UserPoolId=pool.pool_id, Username=name, Password=PASSWORD, Permanent=True)
    for group in groups:
        client.admin_add_user_to_group(UserPoolId=pool.pool_id, Username=name, GroupName=group)
    return name


def sign_in(pool: CognitoUserPool, base: str, name: str) -> dict[str, Any]:
    result = idp(base).initiate_auth(
        AuthFlow="USER_PASSWORD_AUTH", ClientId=pool.client_id,
        AuthParameters={"USERNAME": name, "PASSWORD": PASSWORD},
    )
    return dict(result["AuthenticationResult"])


def verifier_for(pool: CognitoUserPool, base: str, **settings: Any) -> JwtVerifier:
    jwks_url = f"{base}/cognito-idp/{pool.pool_id}/.well-known/jwks.json"
    return JwtVerifier(Settings(auth_issuer=pool.issuer, auth_audience=pool.client_id,
                                auth_algorithms="RS256", auth_jwks_url=jwks_url, **settings))


def test_a_cognito_user_signs_in_and_both_tokens_carry_tenant_and_scopes(cognito: Any) -> None:
    pool, base = cognito
    name = sign_up(pool, base, "acme", ("chat", "finance", "staff"))
    tokens = sign_in(pool, base, name)
    verifier = verifier_for(pool, base)
    for token in (tokens["AccessToken"], tokens["IdToken"]):
        identity = verifier.verify(token)
        assert identity.tenant_id == "acme" and {"chat", "finance"} <= identity.scopes
        assert "staff" not in identity.scopes
        # the token's exp travels with the identity (a WebSocket frame checks it after $connect)
        assert identity.expires_at == jwt.decode(token, options={"verify_signature": False})["exp"]


def test_without_the_trigger_cognitos_own_claims_are_refused(tmp_path: Path) -> None:
    # Defect 2 of issue 10: Cognito writes custom:tenant (ID token only) and no scope the code knows.
    bare = CognitoUserPool(tmp_path, trigger=None)
    bare.create_user("bob", {"custom:tenant": "acme"}, password=PASSWORD)
    bare.add_to_group("bob", "chat")
    tokens = bare.sign_in("bob", PASSWORD)
    with serve_jwks(bare.jwks()["keys"]) as jwks:
        verifier = JwtVerifier(Settings(auth_issuer=bare.issuer, auth_audience=bare.client_id,
                                        auth_algorithms="RS256", auth_jwks_url=jwks.url))
        for token in (tokens.access_token, tokens.id_token):
            with pytest.raises(Unauthorized, match="lacks the tenant"):
                verifier.verify(token)


def test_a_user_without_a_tenant_cannot_sign_in(cognito: Any) -> None:
    pool, base = cognito
    name = sign_up(pool, base, None, ("chat",))
    with pytest.raises(ClientError) as caught:
        sign_in(pool, base, name)
    assert caught.value.response["Error"]["Code"] == "UserLambdaValidationException"
    assert "tenant" in caught.value.response["Error"]["Message"]


def test_a_trigger_may_not_write_scope_as_an_access_token_claim(tmp_path: Path) -> None:
    def wrong(event: dict[str, Any]) -> dict[str, Any]:
        details = {"accessTokenGeneration": {"claimsToAddOrOverride": {"tenant": "acme", "scope": "chat"}}}
        return {**event, "response": {"claimsAndScopeOverrideDetails": details}}

    pool = CognitoUserPool(tmp_path, trigger=wrong)
    pool.create_user("carol", {"custom:tenant": "acme"}, password=PASSWORD)
    with pytest.raises(Exception, match=r"may not set \['scope'\]"):
        pool.sign_in("carol", PASSWORD)


# ---- the HTTP API's Lambda authorizer ------------------------------------------------------------
@pytest.fixture
def deps(pg_url: str, redis_url: str, cognito: Any) -> Iterator[Deps]:
    pool, base = cognito
    d = Deps(Settings(environment="test", database_url=pg_url, redis_url=redis_url, auth_issuer=pool.issuer,
                      auth_audience=pool.client_id, auth_algorithms="RS256",
                      auth_jwks_url=f"{base}/cognito-idp/{pool.pool_id}/.well-known/jwks.json"))
    set_deps(d)
    yield d
    set_deps(None)
    d.db.close()


def authorizer_event(**headers: str) -> dict[str, Any]:
    event = copy.deepcopy(AUTHORIZER_EVENT)
    event["headers"].update(headers)
    return event


def authorize(event: dict[str, Any]) -> dict[str, Any]:
    return dict(invoke(load_handler(wiring.HTTP_AUTHORIZER), event))


def test_the_authorizer_admits_a_cognito_token_a_bearer_api_key_and_an_x_api_key(
    deps: Deps, cognito: Any
) -> None:
    pool, base = cognito
    token = sign_in(pool, base, sign_up(pool, base, "acme", ("chat",)))["AccessToken"]
    creator = Identity(tenant_id=f"t-{uuid.uuid4().hex[:8]}", user_id="root", scopes=frozenset({"chat"}))
    key = ApiKeyService(deps).create(creator, name="svc", scopes=["chat"], expires_in_days=None).key

    jwt_result = authorize(authorizer_event(authorization=f"Bearer {token}"))
    assert jwt_result["isAuthorized"] is True
    assert jwt_result["context"]["tenantId"] == "acme" and jwt_result["context"]["authType"] == "jwt"
    for headers in ({"authorization": f"Bearer {key}"}, {"x-api-key": key}):
        result = authorize(authorizer_event(**headers))
        assert result["isAuthorized"] is True, headers
        assert result["context"]["tenantId"] == creator.tenant_id
        assert result["context"]["authType"] == "api_key" and result["context"]["scopes"] == "chat"
        assert set(result["context"]) >= {"tenantId", "userId", "scopes", "authType"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Basic YTpi"}, {"authorization": "Bearer not-a-jwt"},
     {"x-api-key": "csk_aaaaaaaaaaaa_" + "A" * 43}, {"authorization": "Bearer csk_bad"}],
)
def test_the_authorizer_refuses_anything_else_with_a_simple_response(
    deps: Deps, headers: dict[str, str]
) -> None:
    assert authorize(authorizer_event(**headers)) == {"isAuthorized": False}


def integration_event(path: str, context: dict[str, str] | None, **headers: str) -> dict[str, Any]:
    """The payload 2.0 event API Gateway sends the REST function after the authorizer allowed it."""
    event = copy.deepcopy(AUTHORIZER_EVENT)
    for name in ("type", "routeArn", "identitySource"):
        event.pop(name)
    event.update(rawPath=path, body="", isBase64Encoded=False)
    event["headers"] = {k: v for k, v in {**event["headers"], **headers}.items()}
    event["requestContext"]["http"]["path"] = path
    if context is not None:
        event["requestContext"]["authorizer"] = {"lambda": context}
    return event


def test_the_rest_app_takes_the_authorizers_context_and_still_checks_without_one(deps: Deps) -> None:
    rest = load_handler(wiring.REST_API)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    allowed = {"tenantId": tenant, "userId": "alice", "scopes": "chat", "method": "jwt", "keyId": "",
               "authType": "jwt"}
    # GIVEN API Gateway already authorized the caller, WHEN the app runs, THEN it serves that identity
    ok = invoke(rest, integration_event("/v1/conversations", allowed))
    assert ok["statusCode"] == 200, ok
    # the authorizer's scopes still bind: a finance-only caller reads no conversations
    finance = invoke(rest, integration_event("/v1/conversations", {**allowed, "scopes": "finance"}))
    assert finance["statusCode"] == 403
    # WITHOUT an authorizer context (local, or a misconfigured route), the app checks credentials itself
    refused = invoke(rest, integration_event("/v1/conversations", None))
    assert refused["statusCode"] == 401


async def test_admin_calls_are_served_to_this_machine_only(tmp_path: Path) -> None:
    # Cognito's Admin* operations need IAM credentials; the stand-in has none to check.
    import httpx

    pool = CognitoUserPool(tmp_path, trigger=None)
    app = Starlette(routes=routes(pool))
    headers = {"x-amz-target": "AWSCognitoIdentityProviderService.AdminCreateUser",
               "content-type": "application/x-amz-json-1.1"}  # fmt: skip
    body = json.dumps({"UserPoolId": pool.pool_id, "Username": "mallory"})
    remote = httpx.ASGITransport(app=app, client=("203.0.113.9", 40000))
    async with httpx.AsyncClient(transport=remote, base_url="http://idp") as client:
        refused = await client.post("/cognito-idp/", headers=headers, content=body)
    assert refused.status_code == 400 and refused.json()["__type"] == "NotAuthorizedException"
    assert "mallory" not in pool.users
    local = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=local, base_url="http://idp") as client:
        assert (await client.post("/cognito-idp/", headers=headers, content=body)).status_code == 200
    assert "mallory" in pool.users


def test_the_stand_in_keeps_the_pools_schema_password_policy_and_temporary_passwords(
    tmp_path: Path,
) -> None:
    """Contracts of the Cognito API that the stand-in honours, with the template's settings
    (cdk/constructs, the user pool's Schema and Policies.PasswordPolicy): AdminCreateUser refuses a
    custom attribute the schema does not define; AdminSetUserPassword applies the password policy and,
    without `Permanent`, leaves the user in FORCE_CHANGE_PASSWORD, so InitiateAuth answers the
    NEW_PASSWORD_REQUIRED challenge instead of tokens; InitiateAuth needs its ClientId.
    (AdminSetUserPassword, AdminCreateUser and InitiateAuth in the Cognito API Reference.)"""
    policy = {"MinimumLength": 12, "RequireUppercase": True, "RequireLowercase": True,
              "RequireNumbers": True, "RequireSymbols": True}
    pool = CognitoUserPool(tmp_path, custom_attributes=("custom:tenant",), password_policy=policy)
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=routes(pool)), port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    client = idp(base)
    try:
        with pytest.raises(ClientError) as refused:
            client.admin_create_user(UserPoolId=pool.pool_id, Username="eve",
                                     UserAttributes=[{"Name": "custom:secret", "Value": "x"}])
        assert refused.value.response["Error"]["Code"] == "InvalidParameterException"
        client.admin_create_user(UserPoolId=pool.pool_id, Username="ann",
                                 UserAttributes=[{"Name": "custom:tenant", "Value": "acme"}])
        for weak in ("a", "alllowercase-9-long", "NoNumbers-at-all", "Short-9a"):
            with pytest.raises(ClientError) as refused:
                client.admin_set_user_password(UserPoolId=pool.pool_id, Username="ann", Password=weak,
                                               Permanent=True)
            assert refused.value.response["Error"]["Code"] == "InvalidPasswordException", weak
        client.admin_set_user_password(UserPoolId=pool.pool_id, Username="ann", Password=PASSWORD)
        auth = {"USERNAME": "ann", "PASSWORD": PASSWORD}
        first = client.initiate_auth(AuthFlow="USER_PASSWORD_AUTH", ClientId=pool.client_id,
                                     AuthParameters=auth)
        assert first["ChallengeName"] == "NEW_PASSWORD_REQUIRED" and "AuthenticationResult" not in first
        client.admin_set_user_password(UserPoolId=pool.pool_id, Username="ann", Password=PASSWORD,
                                       Permanent=True)
        signed = client.initiate_auth(AuthFlow="USER_PASSWORD_AUTH", ClientId=pool.client_id,
                                      AuthParameters=auth)
        assert signed["AuthenticationResult"]["IdToken"]
        # boto3 checks ClientId's length itself; another client may send it empty, as here.
        empty = httpx.post(f"{base}/cognito-idp/", timeout=10, json={
            "AuthFlow": "USER_PASSWORD_AUTH", "ClientId": "", "AuthParameters": auth,
        }, headers={"X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",
                    "Content-Type": "application/x-amz-json-1.1"})
        assert empty.status_code == 400 and "InvalidParameterException" in empty.text, empty.text
    finally:
        server.should_exit = True
        thread.join(5)
