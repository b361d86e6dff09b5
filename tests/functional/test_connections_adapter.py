"""The @connections adapter signs its own `PostToConnection` requests (lambdas/adapters/connections.py).

Contracts checked:
- the request is the one boto3's `apigatewaymanagementapi.post_to_connection` sends: same method, URL
  (stage path, percent-encoded ConnectionId), body and Signature Version 4 headers, compared with the
  request boto3 itself builds under the same clock and credentials (session token included);
- the API Gateway management API's answers ("Use @connections commands in your service", API Gateway
  Developer Guide): 200 delivered, 410 GoneException for a connection that is gone (the adapter
  answers False), 403 for a wrong signature (the adapter raises), checked against the gateway
  emulator behind the run's SigV4 guard, with a real WebSocket client on the other end.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.auth
import pytest
import websockets
from botocore.awsrequest import AWSResponse
from botocore.credentials import Credentials
from starlette.applications import Starlette
from starlette.routing import Mount

from chatstack.local.gateway import GatewayEmulator
from chatstack.local.internal_auth import RunCredentials, guarded
from lambdas.adapters.connections import Connections, PostFailed

FIXED = datetime.datetime(2026, 11, 29, 8, 0, 0)
ENDPOINT = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"


class _Raw:
    def stream(self) -> Any:
        return iter([b""])


def boto3_request(connection_id: str, data: bytes, token: str | None, endpoint: str = ENDPOINT) -> Any:
    """The request boto3 would send (captured before it leaves; nothing goes on the network)."""
    client = boto3.client(
        "apigatewaymanagementapi", endpoint_url=endpoint, region_name="eu-west-1",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="wJalrXUtnFEMI", aws_session_token=token,
    )
    seen: list[Any] = []

    def capture(request: Any, **_: Any) -> AWSResponse:
        seen.append(request)
        return AWSResponse(request.url, 200, {}, _Raw())

    client.meta.events.register("before-send", capture)
    client.post_to_connection(ConnectionId=connection_id, Data=data)
    return seen[0]


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//session+token="])
@pytest.mark.parametrize("connection_id", ["L0SM9cOFvHcCIhw=", "a/b+c=", "plain"])
@pytest.mark.parametrize("endpoint", [ENDPOINT, "http://127.0.0.1:8021/local", "https://API.example.com:443"])
def test_the_signed_post_is_the_request_boto3_sends(
    monkeypatch: pytest.MonkeyPatch, connection_id: str, token: str | None, endpoint: str
) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: FIXED)
    data = b'{"type":"delta","requestId":"r","seq":1,"text":"h\xc3\xa9"}'
    expected = boto3_request(connection_id, data, token, endpoint)
    adapter = Connections(
        endpoint, region="eu-west-1", credentials=Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI", token)
    )
    path, headers = adapter.signed(connection_id, data, now=FIXED)
    assert expected.url.endswith(path) and expected.url[: -len(path)].lower() in endpoint.lower()
    signed = {"Authorization", "X-Amz-Date"} | ({"X-Amz-Security-Token"} if token else set())
    for name in signed:
        assert headers[name] == expected.headers[name].decode(), name
    assert set(headers) == signed


@dataclass
class Emulator:
    gateway: GatewayEmulator
    base: str
    run: RunCredentials

    def adapter(self, secret_access_key: str | None = None) -> Connections:
        """The adapter as a Lambda host builds it, signing with the run's key (or another secret)."""
        secret = secret_access_key or self.run.secret_access_key
        return Connections(
            f"{self.base}/{self.gateway.stage}", region="us-east-1",
            credentials=Credentials(self.run.access_key_id, secret),
        )


@pytest.fixture
async def emulator(serve_routes: Any) -> Emulator:
    run = RunCredentials.generate()
    gateway = GatewayEmulator(routes={}, authorizer=None)
    # As `chatstack up` serves it: posts ahead of Starlette, everything behind the run's SigV4 guard.
    app = guarded(gateway.posts_in_front_of(Starlette(routes=gateway.routes)), run)
    base = await serve_routes(lambda _: [Mount("/", app=app)])
    return Emulator(gateway, base, run)


async def test_a_post_reaches_the_client_and_a_gone_connection_answers_false(emulator: Emulator) -> None:
    gateway, adapter = emulator.gateway, emulator.adapter()
    async with websockets.connect(emulator.base.replace("http", "ws") + gateway.ws_path) as ws:
        for _ in range(100):  # the emulator registers the connection right after the handshake
            if gateway.connection_count:
                break
            await asyncio.sleep(0.01)
        (connection_id,) = list(gateway._connections)
        frame = '{"type":"delta","text":"caf\u00e9"}'
        assert await asyncio.to_thread(adapter.post, connection_id, frame) is True
        assert await asyncio.wait_for(ws.recv(), 5) == frame
    assert await asyncio.to_thread(adapter.post, connection_id, "late") is False  # 410 Gone
    assert await asyncio.to_thread(adapter.post, "never-connected=", "x") is False


async def test_a_wrong_signature_raises_instead_of_passing_for_gone(emulator: Emulator) -> None:
    adapter = emulator.adapter(secret_access_key="not-the-secret")
    with pytest.raises(PostFailed) as refused:
        await asyncio.to_thread(adapter.post, "abc=", "x")
    assert refused.value.status == 403 and refused.value.error_type == "InvalidSignatureException"


async def test_refused_posts_keep_the_management_api_errors(emulator: Emulator) -> None:
    """The post route's answers through the path `chatstack up` serves (ahead of Starlette): too long
    (413 PayloadTooLargeException) and empty (400 BadRequestException) frames are refused, not sent."""
    gateway, adapter = emulator.gateway, emulator.adapter()
    async with websockets.connect(emulator.base.replace("http", "ws") + gateway.ws_path) as ws:
        for _ in range(100):
            if gateway.connection_count:
                break
            await asyncio.sleep(0.01)
        (connection_id,) = list(gateway._connections)
        with pytest.raises(PostFailed) as too_long:
            await asyncio.to_thread(adapter.post, connection_id, "x" * (gateway.max_message_bytes + 1))
        assert (too_long.value.status, too_long.value.error_type) == (413, "PayloadTooLargeException")
        with pytest.raises(PostFailed) as empty:
            await asyncio.to_thread(adapter.post, connection_id, "")
        assert (empty.value.status, empty.value.error_type) == (400, "BadRequestException")
        assert await asyncio.to_thread(adapter.post, connection_id, "after") is True
        assert await asyncio.wait_for(ws.recv(), 5) == "after"
