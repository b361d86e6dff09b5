"""End to end through `chatstack up --as-deployed cdk.out/`: the service configured by the synthesized
templates of the example deployment (functions' environment, memory and timeouts, both APIs' routes
and authorizers, the Cognito pool and its pre-token trigger), with identity from the Cognito stand-in.

A user signs in as Cognito users do (boto3 `cognito-idp`, the documented AdminCreateUser /
AdminAddUserToGroup / InitiateAuth calls) and chats over the WebSocket with the access token; a
service calls REST with an API key. A mismatch between the templates and the code (a claim Cognito
does not emit, an HTTP API authorizer that refuses `x-api-key`) fails here, as it would in the cloud.

The templates come from CHATSTACK_AS_DEPLOYED_CDK_OUT (a `make synth` output) or from a synth of the
example config made here (bundling off: about a minute).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import websockets

from tests.helpers.service import Service, start_service, stop_service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).parents[2]
PASSWORD = "Correct-Horse-9-battery"
SYNTH = """
import sys
from cdk.app import ROOT, build_app, file_context, quiet_node_warnings
from cdk.config import load_config
quiet_node_warnings()
app, _ = build_app(load_config(file_context(), ROOT), context={**file_context(), "bundling": False},
                   outdir=sys.argv[1])
app.synth()
"""


@pytest.fixture(scope="module")
def cdk_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("CHATSTACK_AS_DEPLOYED_CDK_OUT")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("cdk.out")
    env = {**os.environ, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"}
    done = subprocess.run([sys.executable, "-c", SYNTH, str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def deployed(
    cdk_out: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, dict[str, Any]]]:
    data = tmp_path_factory.mktemp("as-deployed") / "data"
    svc = start_service(data, "--as-deployed", str(cdk_out), "--token-rate", "0")
    try:
        yield svc, json.loads((data / "as-deployed.json").read_text())
    finally:
        stop_service(svc)


def cognito_user(report: dict[str, Any], tenant: str, groups: tuple[str, ...]) -> dict[str, Any]:
    """An administrator creates the user as docs/identity.md says; the user signs in."""
    pool = report["cognito"]
    assert pool is not None, "the templates configure no Cognito user pool"
    idp = boto3.client("cognito-idp", endpoint_url=pool["endpoint"], region_name=report["region"],
                       aws_access_key_id="local", aws_secret_access_key="local")  # fmt: skip
    name = f"user-{uuid.uuid4().hex[:8]}"
    idp.admin_create_user(UserPoolId=pool["user_pool_id"], Username=name,
                          UserAttributes=[{"Name": "email", "Value": f"{name}@example.com"},
                                          {"Name": "custom:tenant", "Value": tenant}])  # fmt: skip
    idp.admin_set_user_password(UserPoolId=pool["user_pool_id"], Username=name, Password=PASSWORD,
                                Permanent=True)  # fmt: skip
    for group in groups:
        idp.admin_add_user_to_group(UserPoolId=pool["user_pool_id"], Username=name, GroupName=group)
    auth = idp.initiate_auth(AuthFlow="USER_PASSWORD_AUTH", ClientId=pool["client_id"],
                             AuthParameters={"USERNAME": name, "PASSWORD": PASSWORD})  # fmt: skip
    return dict(auth["AuthenticationResult"])


async def chat(websocket_url: str, token: str, text: str) -> list[dict[str, Any]]:
    rid = str(uuid.uuid4())
    frames = []
    async with websockets.connect(f"{websocket_url}?token={token}") as ws:
        await ws.send(json.dumps({"action": "sendMessage", "requestId": rid, "text": text}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
            frames.append(frame)
            if frame.get("requestId") == rid and frame["type"] in ("done", "error"):
                return frames


def test_the_runtime_takes_functions_routes_and_authorizers_from_the_templates(
    deployed: tuple[Service, dict[str, Any]],
) -> None:
    _, report = deployed
    assert report["functions"]["worker"]["timeout_s"] > 29  # the template's, not a default
    assert report["websocket_routes"]["sendMessage"] == "send_message"
    assert report["websocket_authorizer"]["function"] == "authorizer"
    assert any(r["path"] == "/v1/{proxy+}" and r["authorizer"] for r in report["http_routes"])


async def test_a_cognito_user_signs_in_and_chats_over_the_websocket(
    deployed: tuple[Service, dict[str, Any]],
) -> None:
    svc, report = deployed
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    tokens = cognito_user(report, tenant, ("chat",))
    frames = await chat(svc.websocket, tokens["AccessToken"], "Paris is the capital of France. Capital?")
    assert frames[0]["type"] == "ack", frames
    assert frames[-1]["type"] == "done", frames[-1]
    with httpx.Client(base_url=svc.base, timeout=15) as api:
        listed = api.get("/v1/conversations", headers={"Authorization": f"Bearer {tokens['AccessToken']}"})
    assert listed.status_code == 200, listed.text
    assert [c["id"] for c in listed.json()["items"]] == [frames[0]["conversationId"]]


def test_a_service_calls_rest_with_an_api_key(deployed: tuple[Service, dict[str, Any]]) -> None:
    svc, report = deployed
    admin = cognito_user(report, f"t-{uuid.uuid4().hex[:8]}", ("chat", "admin"))
    with httpx.Client(base_url=svc.base, timeout=15) as api:
        created = api.post("/v1/api-keys", json={"name": "billing-sync", "scopes": ["chat"]},
                           headers={"Authorization": f"Bearer {admin['AccessToken']}"})  # fmt: skip
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        by_header = api.get("/v1/conversations", headers={"x-api-key": key})
        assert by_header.status_code == 200, f"x-api-key refused by the deployed HTTP API: {by_header.text}"
        as_bearer = api.get("/v1/conversations", headers={"Authorization": f"Bearer {key}"})
        assert as_bearer.status_code == 200, as_bearer.text
        assert api.get("/v1/conversations").status_code in (401, 403)


def test_the_banner_offers_no_dev_token_that_the_templates_refuse(
    deployed: tuple[Service, dict[str, Any]],
) -> None:
    """As deployed, the authorizers accept the Cognito stand-in's tokens and API keys, not the dev
    issuer's: the printed links carried a dev token that every route refused (401 and 403)."""
    svc, _ = deployed
    deadline = time.monotonic() + 30
    while "  healthz:" not in (banner := svc.stdout()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "  healthz:" in banner, banner
    assert "chatstack is up" in banner and "Cognito stand-in" in banner and "as-deployed.json" in banner
    assert "?token=eyJ" not in banner
