"""The local API Gateway WebSocket emulator honours API Gateway's documented WebSocket contract.

Contract checked (API Gateway developer guide: Lambda REQUEST authorizers on $connect, route selection,
@connections commands, WebSocket quotas): the authorizer's IAM policy decides the handshake (403 deny,
401 "Unauthorized", 500 on errors), $connect can refuse it, messages route on `$request.body.action`
with `$default` or a "Forbidden" frame as fallback, events have the documented shapes (Powertools'
models and the JSON fixtures), `@connections` answers boto3's `apigatewaymanagementapi` client
(410 Gone, 413 above 128 KB), limits close with 1009 / 1001, and every close runs `$disconnect` once.
Everything goes through a real uvicorn server, real `websockets` clients and real boto3 clients.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayWebSocketConnectEventModel,
    APIGatewayWebSocketDisconnectEventModel,
    APIGatewayWebSocketMessageEventModel,
)
from starlette.applications import Starlette
from starlette.routing import Mount, WebSocketRoute
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chatstack.local.gateway import GatewayEmulator
from chatstack.local.lambda_context import LocalLambdaContext, load_handler
from lambdas.wiring import Function

FIXTURES = Path(__file__).parent.parent / "fixtures" / "events"
CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "local", "aws_secret_access_key": "local"}

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def management_client(endpoint_url: str) -> Any:
    """One boto3 client per endpoint: creating clients is not thread-safe, using them is."""
    with _clients_lock:
        if endpoint_url not in _clients:
            _clients[endpoint_url] = boto3.client(
                "apigatewaymanagementapi", endpoint_url=endpoint_url, **CREDENTIALS
            )
        return _clients[endpoint_url]


class Calls:
    """What the handlers saw, recorded from their worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[str, dict[str, Any]]] = []
        self.notes: list[Any] = []

    def add(self, route: str, event: dict[str, Any]) -> None:
        with self._lock:
            self.items.append((route, event))

    def events(self, route: str) -> list[dict[str, Any]]:
        with self._lock:
            return [event for key, event in self.items if key == route]

    def disconnects(self, connection_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events("$disconnect") if e["requestContext"]["connectionId"] == connection_id]


def build_handlers(calls: Calls) -> tuple[Callable[..., Any], dict[str, Callable[..., Any]]]:
    def authorizer(event: dict[str, Any], context: LocalLambdaContext) -> dict[str, Any]:
        assert context.get_remaining_time_in_millis() > 0
        calls.add("authorizer", event)
        token = (event.get("queryStringParameters") or {}).get("token")
        if token == "unauthorized":
            raise Exception("Unauthorized")
        if token == "malformed":
            return {"policyDocument": {}}
        if token not in {"allow", "deny"}:
            raise RuntimeError("the identity provider is down")
        statement = {"Action": "execute-api:Invoke", "Effect": token.title(), "Resource": event["methodArn"]}
        return {
            "principalId": "user-1",
            "policyDocument": {"Version": "2012-10-17", "Statement": [statement]},
            "context": {"tenantId": "tenant-1", "level": 3, "admin": False},
        }

    def on_connect(event: dict[str, Any], context: LocalLambdaContext) -> dict[str, Any]:
        calls.add("$connect", event)
        mode = (event.get("queryStringParameters") or {}).get("connect")
        if mode == "refuse":
            return {"statusCode": 403, "body": "no"}
        if mode == "explode":
            raise RuntimeError("the registry is down")
        if mode == "slow":
            time.sleep(0.5)
        if mode == "selfpost":
            client = management_client(f"http://{event['requestContext']['domainName']}")
            try:
                client.post_to_connection(ConnectionId=event["requestContext"]["connectionId"], Data=b"early")
                calls.notes.append("delivered")
            except client.exceptions.GoneException:
                calls.notes.append("gone")
        return {"statusCode": 200}

    def on_disconnect(event: dict[str, Any], context: LocalLambdaContext) -> None:
        calls.add("$disconnect", event)

    def echo(event: dict[str, Any], context: LocalLambdaContext) -> dict[str, Any]:
        calls.add("echo", event)
        request = event["requestContext"]
        # The way handlers find the callback URL in the cloud: https://{domainName}/{stage}.
        client = management_client(f"http://{request['domainName']}/{request['stage']}")
        client.post_to_connection(ConnectionId=request["connectionId"], Data=event["body"].encode())
        return {"statusCode": 200}

    def fail(event: dict[str, Any], context: LocalLambdaContext) -> None:
        calls.add("fail", event)
        raise RuntimeError("handler bug")

    def slow(event: dict[str, Any], context: LocalLambdaContext) -> None:
        started = time.monotonic()
        time.sleep(0.15)
        calls.notes.append((json.loads(event["body"])["n"], started, time.monotonic()))

    def default(event: dict[str, Any], context: LocalLambdaContext) -> None:
        calls.add("$default", event)

    routes = {
        "$connect": on_connect,
        "$disconnect": on_disconnect,
        "echo": echo,
        "fail": fail,
        "slow": slow,
        "$default": default,
    }
    return authorizer, routes


class Harness:
    def __init__(self, gateway: GatewayEmulator, base_url: str, calls: Calls) -> None:
        self.gateway = gateway
        self.base_url = base_url
        self.calls = calls
        self.client = management_client(base_url)

    def url(self, query: str = "token=allow") -> str:
        return f"{self.base_url.replace('http', 'ws', 1)}/ws?{query}"

    async def connection_id(self, websocket: ClientConnection) -> str:
        """The id API Gateway gave this socket, learnt the way a client does: from an echo."""
        await websocket.send(json.dumps({"action": "echo", "probe": True}))
        await asyncio.wait_for(websocket.recv(), 5)
        return str(self.calls.events("echo")[-1]["requestContext"]["connectionId"])

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.01)

    async def call(self, method: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.client, method), **kwargs)


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(serve_routes: Any) -> AsyncIterator[MakeHarness]:
    gateways: list[GatewayEmulator] = []

    async def make(
        *,
        with_default: bool = True,
        with_authorizer: bool = True,
        as_served: bool = True,
        **options: Any,
    ) -> Harness:
        calls = Calls()
        authorizer, routes = build_handlers(calls)
        if not with_default:
            routes.pop("$default")
        gateway = GatewayEmulator(
            routes=routes, authorizer=authorizer if with_authorizer else None, **options
        )
        gateways.append(gateway)
        if as_served:  # as `chatstack up` serves it: ahead of Starlette, with its uvicorn settings
            management = [route for route in gateway.routes if not isinstance(route, WebSocketRoute)]
            app = gateway.in_front_of(Starlette(routes=management))
            base_url = await serve_routes(lambda _: [Mount("/", app=app)], **gateway.server_options)
        else:  # a Starlette route on uvicorn's defaults: the gateway's own checks, with no server limits
            base_url = await serve_routes(lambda _: gateway.routes)
        return Harness(gateway, base_url, calls)

    yield make
    for gateway in gateways:
        await gateway.aclose()


async def refused_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    return refused.value.response.status_code


def load_fixture(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


# -- handshake -------------------------------------------------------------------------------------


async def test_given_an_allow_policy_when_connecting_then_every_route_sees_the_authorizer_context(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    async with connect(h.url()) as websocket:
        connection_id = await h.connection_id(websocket)
    await h.until(lambda: len(h.calls.disconnects(connection_id)) == 1)

    (auth_event,) = h.calls.events("authorizer")
    assert auth_event["type"] == "REQUEST"
    assert auth_event["methodArn"] == "arn:aws:execute-api:us-east-1:000000000000:local/v1/$connect"
    assert auth_event["queryStringParameters"] == {"token": "allow"}
    assert auth_event["multiValueQueryStringParameters"] == {"token": ["allow"]}
    expected = {"principalId": "user-1", "tenantId": "tenant-1", "level": 3, "admin": False}
    for route in ("$connect", "echo", "$disconnect"):
        authorizer = h.calls.events(route)[0]["requestContext"]["authorizer"]
        assert {key: authorizer[key] for key in expected} == expected
        assert isinstance(authorizer["integrationLatency"], int)


@pytest.mark.parametrize(
    ("token", "status"), [("deny", 403), ("unauthorized", 401), ("boom", 500), ("malformed", 500)]
)
async def test_given_an_authorizer_verdict_when_connecting_then_the_handshake_gets_the_documented_status(
    make_harness: MakeHarness, token: str, status: int
) -> None:
    h = await make_harness()
    assert await refused_status(h.url(f"token={token}")) == status
    assert h.calls.events("$connect") == []
    assert h.calls.events("$disconnect") == []
    assert h.gateway.connection_count == 0


@pytest.mark.parametrize(("mode", "status"), [("refuse", 403), ("explode", 500)])
async def test_given_connect_refuses_when_connecting_then_the_handshake_fails_without_disconnect(
    make_harness: MakeHarness, mode: str, status: int
) -> None:
    h = await make_harness()
    assert await refused_status(h.url(f"token=allow&connect={mode}")) == status
    assert len(h.calls.events("$connect")) == 1
    assert h.calls.events("$disconnect") == []


async def test_given_connect_is_still_running_when_it_posts_to_its_own_connection_then_it_gets_gone(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    async with connect(h.url("token=allow&connect=selfpost")) as websocket:
        await h.connection_id(websocket)
    assert h.calls.notes == ["gone"]


async def test_given_no_authorizer_when_connecting_then_connect_decides_alone(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(with_authorizer=False)
    async with connect(h.url("")) as websocket:
        await h.connection_id(websocket)
    assert "authorizer" not in h.calls.events("$connect")[0]["requestContext"]


# -- event shapes ----------------------------------------------------------------------------------


async def test_events_parse_with_the_powertools_models_and_have_the_documented_keys(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    async with connect(h.url(), user_agent_header="contract-test") as websocket:
        connection_id = await h.connection_id(websocket)
    await h.until(lambda: len(h.calls.disconnects(connection_id)) == 1)
    auth = h.calls.events("authorizer")[0]
    connect_event = h.calls.events("$connect")[0]
    message = h.calls.events("echo")[0]
    disconnect = h.calls.disconnects(connection_id)[0]

    APIGatewayWebSocketConnectEventModel.model_validate(connect_event)
    parsed = APIGatewayWebSocketMessageEventModel.model_validate(message)
    assert parsed.request_context.route_key == "echo"
    assert json.loads(str(parsed.body)) == {"action": "echo", "probe": True}
    closed = APIGatewayWebSocketDisconnectEventModel.model_validate(disconnect)
    assert closed.request_context.disconnect_status_code == 1000

    for event, fixture in [
        (auth, "apigw_websocket_authorizer_request.json"),
        (connect_event, "apigw_websocket_connect.json"),
        (message, "apigw_websocket_message.json"),
        (disconnect, "apigw_websocket_disconnect.json"),
    ]:
        documented = load_fixture(fixture)
        assert set(event) == set(documented), fixture
        assert set(documented["requestContext"]) <= set(event["requestContext"]), fixture

    context = message["requestContext"]
    assert context["connectionId"] == connection_id
    assert len(connection_id) == 16 and connection_id.endswith("=")
    assert context["domainName"] == h.base_url.removeprefix("http://")
    assert context["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "contract-test"}
    assert context["stage"] == "v1" and context["apiId"] == "local"
    assert context["connectedAt"] == connect_event["requestContext"]["connectedAt"]
    assert context["messageId"] != context["requestId"]


@pytest.mark.parametrize(
    "name",
    [
        "apigw_websocket_connect.json",
        "apigw_websocket_message.json",
        "apigw_websocket_disconnect.json",
    ],
)
def test_the_documented_fixtures_parse_with_the_powertools_models(name: str) -> None:
    model = {
        "apigw_websocket_connect.json": APIGatewayWebSocketConnectEventModel,
        "apigw_websocket_message.json": APIGatewayWebSocketMessageEventModel,
        "apigw_websocket_disconnect.json": APIGatewayWebSocketDisconnectEventModel,
    }[name]
    model.model_validate(load_fixture(name))


# -- routing ---------------------------------------------------------------------------------------


async def test_given_a_default_route_when_the_action_is_unknown_or_the_body_not_json_then_default_runs(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    async with connect(h.url()) as websocket:
        await websocket.send(json.dumps({"action": "nope"}))
        await websocket.send("plain text")
        await websocket.send(json.dumps({"no": "action"}))
        await websocket.send(b"\x00\x01binary")
        await h.until(lambda: len(h.calls.events("$default")) == 4)
    bodies = sorted((e["body"], e["isBase64Encoded"]) for e in h.calls.events("$default"))
    assert bodies == sorted(
        [
            ('{"action": "nope"}', False),
            ("plain text", False),
            ('{"no": "action"}', False),
            ("AAFiaW5hcnk=", True),
        ]
    )
    assert {e["requestContext"]["routeKey"] for e in h.calls.events("$default")} == {"$default"}


async def test_given_no_default_route_when_nothing_matches_then_the_client_gets_a_forbidden_frame(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(with_default=False)
    async with connect(h.url()) as websocket:
        connection_id = await h.connection_id(websocket)
        await websocket.send("not json")
        frame = json.loads(await asyncio.wait_for(websocket.recv(), 5))
        assert frame["message"] == "Forbidden"
        assert frame["connectionId"] == connection_id
        assert frame["requestId"]
        assert await h.connection_id(websocket) == connection_id  # still open


async def test_given_a_failing_handler_when_it_raises_then_the_client_gets_internal_error_and_stays_connected(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    async with connect(h.url()) as websocket:
        connection_id = await h.connection_id(websocket)
        await websocket.send(json.dumps({"action": "fail"}))
        frame = json.loads(await asyncio.wait_for(websocket.recv(), 5))
        assert frame["message"] == "Internal server error"
        assert frame["connectionId"] == connection_id
        assert await h.connection_id(websocket) == connection_id


# -- @connections ----------------------------------------------------------------------------------


async def test_given_an_open_connection_when_managed_through_boto3_then_post_get_and_delete_work(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    async with connect(h.url(), user_agent_header="ua-1") as websocket:
        connection_id = await h.connection_id(websocket)
        await h.call("post_to_connection", ConnectionId=connection_id, Data=b'{"type":"pong"}')
        assert await asyncio.wait_for(websocket.recv(), 5) == '{"type":"pong"}'
        await h.call("post_to_connection", ConnectionId=connection_id, Data=b"\xff\xfe")
        assert await asyncio.wait_for(websocket.recv(), 5) == b"\xff\xfe"

        status = await h.call("get_connection", ConnectionId=connection_id)
        assert status["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "ua-1"}
        assert status["ConnectedAt"] <= status["LastActiveAt"]

        await h.call("delete_connection", ConnectionId=connection_id)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(websocket.recv(), 5)
        assert websocket.close_code == 1000
    await h.until(lambda: len(h.calls.disconnects(connection_id)) == 1)
    context = h.calls.disconnects(connection_id)[0]["requestContext"]
    assert (context["disconnectStatusCode"], context["disconnectReason"]) == (
        1000,
        "Connection Closed Normally",
    )


async def test_given_a_closed_or_unknown_connection_when_managed_then_boto3_raises_gone(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    async with connect(h.url()) as websocket:
        connection_id = await h.connection_id(websocket)
    await h.until(lambda: len(h.calls.disconnects(connection_id)) == 1)
    gone = h.client.exceptions.GoneException
    for target in (connection_id, "AAAAAAAAAAAAAAA="):
        with pytest.raises(gone):
            await h.call("post_to_connection", ConnectionId=target, Data=b"late")
        with pytest.raises(gone):
            await h.call("get_connection", ConnectionId=target)
        with pytest.raises(gone):
            await h.call("delete_connection", ConnectionId=target)


async def test_given_connection_ids_with_slashes_and_plus_when_managed_then_url_encoding_round_trips(
    make_harness: MakeHarness,
) -> None:
    ids = iter(["ab/cd+ef/gh+ij=", "++//++//++//++/="])
    h = await make_harness(new_connection_id=lambda: next(ids))
    async with connect(h.url()) as first, connect(h.url()) as second:
        for websocket, connection_id in ((first, "ab/cd+ef/gh+ij="), (second, "++//++//++//++/=")):
            await h.call("post_to_connection", ConnectionId=connection_id, Data=connection_id.encode())
            assert await asyncio.wait_for(websocket.recv(), 5) == connection_id


async def test_post_limits_are_128_kb_and_a_non_empty_body(make_harness: MakeHarness) -> None:
    h = await make_harness()
    async with connect(h.url(), max_size=None) as websocket:
        connection_id = await h.connection_id(websocket)
        largest = "x" * (128 * 1024)
        await h.call("post_to_connection", ConnectionId=connection_id, Data=largest.encode())
        assert await asyncio.wait_for(websocket.recv(), 5) == largest
        with pytest.raises(h.client.exceptions.PayloadTooLargeException):
            await h.call("post_to_connection", ConnectionId=connection_id, Data=largest.encode() + b"x")
        async with httpx.AsyncClient(base_url=h.base_url) as http:
            empty = await http.post(f"/@connections/{connection_id.replace('/', '%2F')}", content=b"")
        assert empty.status_code == 400
        assert empty.headers["x-amzn-errortype"] == "BadRequestException"
        assert await h.connection_id(websocket) == connection_id


async def test_given_a_client_that_stops_reading_when_posting_then_boto3_gets_limit_exceeded(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(send_timeout_s=0.3)
    async with connect(h.url(), max_queue=1, max_size=None) as websocket:
        connection_id = await h.connection_id(websocket)
        chunk = base64.b64encode(os.urandom(96 * 1024))  # incompressible: permessage-deflate is on

        def flood() -> int:
            for sent in range(400):  # a few MB fill the socket buffers once the client stops reading
                try:
                    h.client.post_to_connection(ConnectionId=connection_id, Data=chunk)
                except h.client.exceptions.LimitExceededException:
                    return sent
            return -1

        assert await asyncio.to_thread(flood) > 0
        with pytest.raises(TimeoutError):  # read the backlog; the socket stays usable
            while True:
                await asyncio.wait_for(websocket.recv(), 1)
        await h.call("post_to_connection", ConnectionId=connection_id, Data=b"after")
        assert await asyncio.wait_for(websocket.recv(), 5) == "after"


async def test_given_many_concurrent_posters_when_streaming_then_each_connection_keeps_its_order(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    connections, per_connection = 8, 60
    sockets = [await connect(h.url()).__aenter__() for _ in range(connections)]
    try:
        ids = [await h.connection_id(websocket) for websocket in sockets]

        def stream(connection_id: str) -> None:
            for seq in range(per_connection):
                h.client.post_to_connection(
                    ConnectionId=connection_id, Data=json.dumps({"seq": seq}).encode()
                )

        async def receive(websocket: ClientConnection) -> list[int]:
            return [
                json.loads(await asyncio.wait_for(websocket.recv(), 10))["seq"] for _ in range(per_connection)
            ]

        received = await asyncio.gather(
            *(asyncio.to_thread(stream, connection_id) for connection_id in ids),
            *(receive(websocket) for websocket in sockets),
        )
        for sequence in received[connections:]:
            assert sequence == list(range(per_connection))
    finally:
        for websocket in sockets:
            await websocket.close()


# -- limits and closes -----------------------------------------------------------------------------


@pytest.mark.parametrize("as_served", [False, True], ids=["in-app", "uvicorn-ws_max_size"])
async def test_given_a_message_over_128_kb_when_received_then_the_connection_closes_with_1009(
    make_harness: MakeHarness, as_served: bool
) -> None:
    h = await make_harness(as_served=as_served)
    async with connect(h.url()) as websocket:
        connection_id = await h.connection_id(websocket)
        await websocket.send(json.dumps({"action": "echo", "pad": "x" * (128 * 1024)}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(websocket.recv(), 5)
        assert websocket.close_code == 1009
    await h.until(lambda: len(h.calls.disconnects(connection_id)) == 1)
    assert h.calls.disconnects(connection_id)[0]["requestContext"]["disconnectStatusCode"] == 1009
    assert len(h.calls.events("echo")) == 1  # only the probe: the oversized message reached no handler


async def test_given_an_idle_connection_when_the_idle_timeout_passes_then_it_closes_going_away(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(idle_timeout_s=0.5)
    async with connect(h.url()) as websocket:
        connection_id = await h.connection_id(websocket)
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(websocket.recv(), 5)
        assert 0.3 < time.monotonic() - started < 3
        assert (websocket.close_code, websocket.close_reason) == (1001, "Going away")
    await h.until(lambda: len(h.calls.disconnects(connection_id)) == 1)
    context = h.calls.disconnects(connection_id)[0]["requestContext"]
    assert (context["disconnectStatusCode"], context["disconnectReason"]) == (1001, "Going away")


async def test_given_an_active_connection_when_the_maximum_duration_passes_then_it_closes_going_away(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(idle_timeout_s=0.3, max_connection_s=1.0)
    async with connect(h.url()) as websocket:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            while True:  # traffic every 0.1 s keeps the idle timer from firing
                await websocket.send("keepalive")
                await asyncio.sleep(0.1)
        assert 0.9 < time.monotonic() - started < 3
        assert websocket.close_code == 1001


async def test_disconnect_runs_exactly_once_for_every_kind_of_close(make_harness: MakeHarness) -> None:
    h = await make_harness(idle_timeout_s=1.0)
    closes: dict[str, str] = {}

    async with connect(h.url()) as websocket:
        closes["client"] = await h.connection_id(websocket)
    async with connect(h.url()) as websocket:
        closes["delete"] = await h.connection_id(websocket)
        await h.call("delete_connection", ConnectionId=closes["delete"])
        await websocket.wait_closed()
    async with connect(h.url()) as websocket:
        closes["too_big"] = await h.connection_id(websocket)
        await websocket.send("x" * (128 * 1024 + 1))
        await websocket.wait_closed()
    async with connect(h.url()) as websocket:
        closes["idle"] = await h.connection_id(websocket)
        await websocket.wait_closed()
    websocket = await connect(h.url()).__aenter__()
    closes["shutdown"] = await h.connection_id(websocket)
    await h.gateway.aclose()
    await websocket.wait_closed()
    assert websocket.close_code == 1001
    assert await refused_status(h.url()) == 503  # a closed gateway takes no new connections

    await asyncio.sleep(0.3)  # room for a duplicate to show up
    codes = {}
    for kind, connection_id in closes.items():
        events = h.calls.disconnects(connection_id)
        assert len(events) == 1, kind
        codes[kind] = events[0]["requestContext"]["disconnectStatusCode"]
    assert codes == {"client": 1000, "delete": 1000, "too_big": 1009, "idle": 1001, "shutdown": 1001}
    assert h.gateway.connection_count == 0


async def test_given_the_client_leaves_while_connect_runs_then_disconnect_still_runs_once(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    with pytest.raises(TimeoutError):
        async with connect(h.url("token=allow&connect=slow"), open_timeout=0.1):
            pass
    await h.until(lambda: len(h.calls.events("$connect")) == 1)
    connection_id = h.calls.events("$connect")[0]["requestContext"]["connectionId"]
    await h.until(lambda: len(h.calls.disconnects(connection_id)) == 1)
    await asyncio.sleep(0.2)
    assert len(h.calls.disconnects(connection_id)) == 1
    assert h.gateway.connection_count == 0


async def test_connection_count_follows_open_sockets(make_harness: MakeHarness) -> None:
    h = await make_harness()
    async with connect(h.url()) as first:
        await h.connection_id(first)
        async with connect(h.url()) as second:
            await h.connection_id(second)
            assert h.gateway.connection_count == 2
        await h.until(lambda: h.gateway.connection_count == 1)
    await h.until(lambda: h.gateway.connection_count == 0)


def test_connection_ids_look_like_api_gateway_ids() -> None:
    gateway = GatewayEmulator(routes={}, authorizer=None)
    ids = {gateway._new_connection_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 16 and i.endswith("=") and "=" not in i[:-1] for i in ids)
    assert any(set(i) & {"/", "+"} for i in ids)  # so they must be URL-encoded in paths, as in AWS


# -- Lambda context --------------------------------------------------------------------------------

probe_logger = Logger(service="contract-test")


@probe_logger.inject_lambda_context
def context_probe(event: dict[str, Any], context: LocalLambdaContext) -> dict[str, Any]:
    probe_logger.info("probe")  # Powertools reads the documented context attributes here
    return {
        "name": context.function_name,
        "version": context.function_version,
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "request": context.aws_request_id,
        "group": context.log_group_name,
        "stream": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "logged_request": probe_logger.get_current_keys()["function_request_id"],
    }


def test_load_handler_gives_each_call_a_fresh_context_that_powertools_accepts() -> None:
    handler = load_handler(Function("probe", f"{__name__}:context_probe", memory_mb=256, timeout_s=3))
    first, second = handler({}), handler({})
    assert first["name"] == "probe" and first["version"] == "$LATEST" and first["memory"] == 256
    assert first["arn"] == "arn:aws:lambda:us-east-1:000000000000:function:probe"
    assert first["group"] == "/aws/lambda/probe" and "[$LATEST]" in first["stream"]
    assert 2000 < first["remaining"] <= 3000
    assert first["request"] != second["request"]
    assert first["logged_request"] == first["request"]


def test_load_handler_imports_nothing_until_the_first_call() -> None:
    handler = load_handler(Function("missing", "chatstack_no_such_module:handler"))
    with pytest.raises(ModuleNotFoundError):
        handler({})


async def test_a_held_connection_keeps_nothing_of_the_messages_it_has_handled(
    make_harness: MakeHarness,
) -> None:
    """Between messages a session waits for minutes; what it holds then is what every held connection
    costs. It keeps no reference to the last message, its text or its route's finished task (about 1.4
    KiB per connection that had spoken: docs/benchmarks.md, "Memory per held connection")."""
    import gc
    import types

    h = await make_harness()
    async with connect(h.url()) as websocket:
        connection_id = await h.connection_id(websocket)
        await websocket.send(json.dumps({"action": "echo", "n": 1}))
        await h.until(lambda: len(h.calls.events("echo")) >= 2)
        await asyncio.sleep(0.05)  # the route's task has finished; the session waits for the next
        gc.collect()
        serving = [
            obj.cr_frame.f_locals
            for obj in gc.get_objects()
            if isinstance(obj, types.CoroutineType)
            and obj.__qualname__ == "GatewayEmulator._serve"
            and obj.cr_frame
        ]
        assert serving, "the session's loop was not found"
        for held in serving:
            assert not {"message", "text", "data", "task"} & set(held), sorted(held)
        assert connection_id


async def test_message_routes_run_a_few_at_a_time_in_arrival_order(make_harness: MakeHarness) -> None:
    """Fifty invocations interleaved on a laptop's cores all finish late together; the gateway runs
    `route_concurrency` message routes at once and queues the rest first come, first served."""
    h = await make_harness(route_concurrency=2)
    async with connect(h.url()) as websocket:
        await h.connection_id(websocket)
        for n in range(6):
            await websocket.send(json.dumps({"action": "slow", "n": n}))
            await asyncio.sleep(0.01)  # arrival order
        await h.until(lambda: len(h.calls.notes) == 6, timeout=10)
    runs: list[tuple[int, float, float]] = sorted(h.calls.notes, key=lambda run: run[1])
    assert [n for n, _, _ in runs] == [0, 1, 2, 3, 4, 5]  # started in the order they arrived
    for _, started, _ in runs:
        running = sum(1 for _, s, e in runs if s <= started < e)
        assert running <= 2
    assert runs[2][1] >= min(runs[0][2], runs[1][2]) - 0.01  # the third waited for one of the first two


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is a Linux call")
def test_the_route_limit_counts_the_cores_the_gateway_may_use_not_the_machines() -> None:
    """A container's or `taskset`'s CPU limit sets how many message routes run at once: four per core
    the gateway may run on."""
    import subprocess
    import sys

    script = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from chatstack.local.gateway import GatewayEmulator; "
        "g = GatewayEmulator(routes={}, authorizer=None); print(g._route_gate._value)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4"
