"""How the fault suite classifies the end of a stream (chatstack.chaos.Follow.end), against a real
WebSocket server that plays the service's part: the four outcomes must be told apart, or a hang could
pass for an error and a closed socket for a frame."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve

from chatstack.chaos.chats import Follow, TrackedReply
from chatstack.client import ChatClient

Behaviour = Callable[[ServerConnection, str], Awaitable[None]]


async def acks_then(ws: ServerConnection, rid: str, *frames: dict[str, object]) -> None:
    await ws.send(json.dumps({"type": "ack", "requestId": rid, "conversationId": "c", "messageId": "m"}))
    await ws.send(json.dumps({"type": "delta", "requestId": rid, "seq": 1, "text": "Hel"}))
    for frame in frames:
        await ws.send(json.dumps(frame))


async def done(ws: ServerConnection, rid: str) -> None:
    usage = {"inputTokens": 1, "outputTokens": 2}
    second = {"type": "delta", "requestId": rid, "seq": 2, "text": "lo"}
    end = {"type": "done", "requestId": rid, "messageId": "a", "finishReason": "stop", "usage": usage}
    await acks_then(ws, rid, second, end)


async def error(ws: ServerConnection, rid: str) -> None:
    await acks_then(ws, rid, {"type": "error", "requestId": rid, "code": "INTERNAL", "message": "Broke."})


async def closes(ws: ServerConnection, rid: str) -> None:
    await acks_then(ws, rid)
    await ws.close()


async def goes_silent(ws: ServerConnection, rid: str) -> None:
    await acks_then(ws, rid)
    await ws.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Behaviour], Awaitable[str]]]:
    servers = []

    async def start(behaviour: Behaviour) -> str:
        async def handle(ws: ServerConnection) -> None:
            frame = json.loads(await ws.recv())
            await behaviour(ws, frame["requestId"])
            await ws.wait_closed()

        running = await serve(handle, "127.0.0.1", 0)
        servers.append(running)
        return f"ws://127.0.0.1:{running.sockets[0].getsockname()[1]}"

    yield start
    for running in servers:
        running.close()
        await running.wait_closed()


@pytest.mark.parametrize(
    ("behaviour", "expected", "text"),
    [
        (done, "done", "Hello"),
        (error, "error", "Hel"),
        (closes, "closed", "Hel"),
        (goes_silent, "hung", "Hel"),
    ],
)
async def test_a_stream_ends_in_done_error_closed_or_hung(
    server: Callable[[Behaviour], Awaitable[str]], behaviour: Behaviour, expected: str, text: str
) -> None:
    client = await ChatClient.connect(await server(behaviour))
    reply = TrackedReply("r-1")
    client.replies["r-1"] = reply
    follow = Follow(client, reply)
    await client.send("Hi", request_id="r-1")
    outcome, ended_at = await follow.end(timeout=1.0)
    await follow.close()
    assert outcome == expected
    assert (ended_at is None) == (expected == "hung")
    assert reply.text_so_far == text
