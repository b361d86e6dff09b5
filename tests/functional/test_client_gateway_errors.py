"""`chatstack.client` against API Gateway's own status messages.

Contract checked: when a route's integration fails, API Gateway sends the caller
`{"message": "Internal server error", "connectionId": ..., "requestId": ...}` (its own request id, not
the protocol's), and the connection stays open ("Handling errors in WebSocket APIs"; the emulator's
gateway tests pin the same frame). The protocol makes a repeated sendMessage with the same requestId
safe (docs/protocol.md), so the client resends what was not acknowledged; before this, such a frame
failed the client's frame parser, ended its reader task, and every later answer on that connection
hung (found under load, when a Lambda host connection was reset mid-invocation).
Real gateway emulator on uvicorn, real WebSocket client, handlers that post through @connections.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.credentials import Credentials

from chatstack.client import MAX_RESENDS, ChatClient, ChatError
from chatstack.local.gateway import GatewayEmulator
from lambdas import protocol
from lambdas.adapters.connections import Connections


class FlakySendMessage:
    """A sendMessage integration that fails its first `failures` invocations, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[str] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, int]:
        body = json.loads(event["body"])
        self.calls.append(body["requestId"])
        if len(self.calls) <= self.failures:
            raise RuntimeError("the integration failed")
        request = event["requestContext"]
        connections = Connections(
            f"http://{request['domainName']}/{request['stage']}", region="us-east-1",
            credentials=Credentials("AKIDLOCAL", "unchecked-here"),
        )
        rid = body["requestId"]
        for frame in (
            protocol.Ack(requestId=rid, conversationId="c", messageId="m"),
            protocol.Delta(requestId=rid, seq=1, text="hello"),
        ):
            connections.post(request["connectionId"], protocol.dump(frame))
        done = {"type": "done", "requestId": rid, "usage": {"inputTokens": 1, "outputTokens": 1},
                "finishReason": "stop", "messageId": "a"}
        connections.post(request["connectionId"], json.dumps(done))
        return {"statusCode": 200}


async def serve(serve_routes: Any, handler: FlakySendMessage) -> str:
    gateway = GatewayEmulator(routes={"sendMessage": handler, "$default": handler}, authorizer=None)
    base = await serve_routes(lambda _: gateway.routes)
    return base.replace("http", "ws", 1) + gateway.ws_path


async def test_an_integration_failure_is_resent_and_the_answer_arrives(serve_routes: Any) -> None:
    handler = FlakySendMessage(failures=1)
    async with await ChatClient.connect(await serve(serve_routes, handler)) as client:
        reply = await client.send("hi")
        assert await reply.text(timeout=10) == "hello"
        assert reply.resends == 1
        # The reader survived the gateway's frame: the connection still carries answers.
        assert await (await client.send("again")).text(timeout=10) == "hello"
    assert handler.calls[0] == handler.calls[1]  # the resend kept its requestId


async def test_a_send_that_keeps_failing_ends_in_an_error_not_a_hang(serve_routes: Any) -> None:
    handler = FlakySendMessage(failures=100)
    async with await ChatClient.connect(await serve(serve_routes, handler)) as client:
        reply = await client.send("hi")
        try:
            await reply.text(timeout=10)
            raise AssertionError("the reply should have failed")
        except ChatError as error:
            assert error.code == "INTERNAL"
    assert len(handler.calls) == 1 + MAX_RESENDS
