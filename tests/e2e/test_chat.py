"""End to end through `chatstack up`: real WebSocket clients, the real handlers, embedded PostgreSQL and
Redis, the gateway and SQS stand-ins, and the local LMI-compatible model server."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
import websockets

from chatstack.client import ChatClient, ChatError
from lambdas import protocol
from tests.helpers.service import Service

pytestmark = pytest.mark.e2e


async def frames_until_terminal(ws: websockets.ClientConnection, request_id: str) -> list[dict]:
    out = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if frame.get("requestId") == request_id or frame["type"] == "pong":
            out.append(frame)
        if frame.get("requestId") == request_id and frame["type"] in ("done", "error"):
            return out


def rest(service: Service, token: str) -> httpx.Client:
    return httpx.Client(base_url=service.base, headers={"Authorization": f"Bearer {token}"}, timeout=10)


async def test_an_answer_streams_in_seq_order_then_is_stored(service: Service) -> None:
    token = service.token(user="u-stream", tenant="t-stream")
    rid = str(uuid.uuid4())
    async with websockets.connect(f"{service.websocket}?token={token}") as ws:
        await ws.send(
            json.dumps(
                {
                    "action": "sendMessage",
                    "requestId": rid,
                    "text": "The capital of France is Paris. What is the capital of France?",
                }
            )
        )
        frames = await frames_until_terminal(ws, rid)
    ack, deltas, done = frames[0], [f for f in frames if f["type"] == "delta"], frames[-1]
    assert ack["type"] == "ack" and ack["requestId"] == rid
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert done["type"] == "done" and done["finishReason"] == "stop"
    assert done["usage"]["outputTokens"] > 0 and done["usage"]["inputTokens"] > 0
    answer = "".join(d["text"] for d in deltas)
    with rest(service, token) as api:
        conversations = api.get("/v1/conversations").json()["items"]
        assert [c["id"] for c in conversations] == [ack["conversationId"]]
        messages = api.get(f"/v1/conversations/{ack['conversationId']}/messages").json()["items"]
    assert [(m["role"], m["seq"]) for m in messages] == [("user", 1), ("assistant", 2)]
    assert messages[1]["content"] == answer and messages[1]["id"] == done["messageId"]
    assert messages[0]["id"] == ack["messageId"]


async def test_a_follow_up_sees_the_earlier_turns(service: Service) -> None:
    async with await ChatClient.connect(service.websocket, token=service.token(user="u-mem")) as client:
        first = await client.send("My favourite colour is ultramarine blue.")
        await first.text()
        ack = await first.ack
        second = await client.send("Which colour is my favourite?", conversation_id=ack.conversation_id)
        answer = await second.text()
    assert "ultramarine" in answer


async def test_the_same_request_id_twice_never_makes_two_answers(service: Service) -> None:
    token = service.token(user="u-dup", tenant="t-dup")
    rid = str(uuid.uuid4())
    async with await ChatClient.connect(service.websocket, token=token) as client:
        reply = await client.send("Tell me about duplicates.", request_id=rid)
        await reply.text()
        again = await client.send("Tell me about duplicates.", request_id=rid)
        ack = await again.ack
    with rest(service, token) as api:
        messages = api.get(f"/v1/conversations/{ack.conversation_id}/messages").json()["items"]
    assert [m["role"] for m in messages] == ["user", "assistant"]


async def test_resume_after_a_dropped_connection_replays_without_gaps(service: Service) -> None:
    token = service.token(user="u-resume")
    text = " ".join(f"Fact number {i} is that resuming works." for i in range(12)) + " Does resuming work?"
    async with await ChatClient.connect(service.websocket, token=token) as first:
        reply = await first.send(text)
        async for _piece in reply:
            break  # got the first delta: drop the connection mid-answer
    seen = reply.next_seq - 1
    assert seen >= 1
    async with await ChatClient.connect(service.websocket, token=token) as second:
        resumed = await second.resume(reply.request_id, after_seq=seen, reply=reply)
        full = await resumed.text()
    assert resumed.done is not None and resumed.done.finish_reason in ("stop", "length")
    conversation = (await reply.ack).conversation_id
    with rest(service, token) as api:
        stored = api.get(f"/v1/conversations/{conversation}/messages").json()["items"][-1]["content"]
    assert full == stored


async def test_cancel_stops_the_generation(service: Service) -> None:
    token = service.token(user="u-cancel")
    long_text = " ".join(f"Cancelling sentence {i} mentions cancellation." for i in range(30))
    async with await ChatClient.connect(service.websocket, token=token) as client:
        reply = await client.send(long_text + " What about cancellation?", options={"maxTokens": 400})
        async for _piece in reply:
            await client.cancel(reply.request_id)
            break
        await reply.text()
    assert reply.done is not None and reply.done.finish_reason == "cancelled"


async def test_deleting_the_conversation_stops_its_answer(service: Service) -> None:
    """An answer whose conversation is deleted mid-stream has nowhere to be stored: it stops (ending
    `cancelled`) rather than running on at the model's cost."""
    token = service.token(user="u-delete-mid")
    long_text = " ".join(f"Deleting sentence {i} mentions deletion." for i in range(30))
    async with await ChatClient.connect(service.websocket, token=token) as client:
        reply = await client.send(long_text + " What about deletion?", options={"maxTokens": 400})
        conversation = (await reply.ack).conversation_id
        async for _piece in reply:
            with rest(service, token) as api:
                assert api.delete(f"/v1/conversations/{conversation}").status_code == 204
            break
        await reply.text()
    assert reply.done is not None and reply.done.finish_reason == "cancelled"


async def test_many_concurrent_chats_all_complete(service: Service) -> None:
    async def chat(i: int) -> str:
        async with await ChatClient.connect(service.websocket, token=service.token(user=f"u-many-{i}")) as c:
            return await (await c.send(f"Number {i} is lucky. Which number is lucky?")).text()

    answers = await asyncio.gather(*(chat(i) for i in range(20)))
    assert all(str(i) in answer for i, answer in enumerate(answers))


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("this is not json", "BAD_REQUEST"),
        (json.dumps({"action": "fly"}), "BAD_REQUEST"),
        (json.dumps({"action": "sendMessage", "text": "no id"}), "BAD_REQUEST"),
        (
            json.dumps({"action": "sendMessage", "requestId": str(uuid.uuid4()), "text": "x" * 40_000}),
            "TOO_LARGE",
        ),
        (
            json.dumps(
                {
                    "action": "sendMessage",
                    "requestId": str(uuid.uuid4()),
                    "text": "hi",
                    "conversationId": str(uuid.uuid4()),
                }
            ),
            "NOT_FOUND",
        ),
        (json.dumps({"action": "resume", "requestId": str(uuid.uuid4())}), "NOT_FOUND"),
        (json.dumps({"action": "cancel", "requestId": str(uuid.uuid4())}), "NOT_FOUND"),
    ],
)
async def test_bad_frames_get_an_error_frame_and_the_connection_stays_usable(
    service: Service, frame: str, code: str
) -> None:
    token = service.token(user="u-bad", tenant="t-bad")
    async with await ChatClient.connect(service.websocket, token=token) as client:
        await client.send_raw(frame)
        error = await client.next_event(timeout=15)
        assert isinstance(error, protocol.Error) and error.code == code, error
        await client.ping()
    with rest(service, token) as api:
        assert api.get("/v1/conversations").json()["items"] == []  # nothing half-written


async def test_another_tenants_conversation_is_not_found(service: Service) -> None:
    owner = service.token(user="owner", tenant="tenant-a")
    async with await ChatClient.connect(service.websocket, token=owner) as client:
        reply = await client.send("A private note.")
        await reply.text()
        conversation = (await reply.ack).conversation_id
    intruder = service.token(user="owner", tenant="tenant-b")
    async with await ChatClient.connect(service.websocket, token=intruder) as client:
        with pytest.raises(ChatError) as info:
            await (await client.send("Let me in.", conversation_id=conversation)).text()
    assert info.value.code == "NOT_FOUND"
    with rest(service, intruder) as api:
        assert api.get(f"/v1/conversations/{conversation}/messages").status_code == 404


async def test_an_oversized_message_closes_the_connection_with_1009(service: Service) -> None:
    async with websockets.connect(f"{service.websocket}?token={service.token()}", max_size=None) as ws:
        await ws.send("x" * (129 * 1024))
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


@pytest.mark.parametrize("kind", ["garbage", "expired", "missing"])
async def test_bad_tokens_are_refused_at_the_handshake(service: Service, kind: str) -> None:
    token = {"garbage": "not.a.jwt", "expired": service.token(ttl_s=-120), "missing": ""}[kind]
    url = f"{service.websocket}?token={token}" if token else service.websocket
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(url):
            pass
    assert info.value.response.status_code == 401


def test_rest_requires_a_token_and_names_the_problem(service: Service) -> None:
    r = httpx.get(service.base + "/v1/conversations", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
    r = httpx.get(
        service.base + "/v1/conversations", headers={"Authorization": "Bearer x" * 3000}, timeout=10
    )
    assert 400 <= r.status_code < 500


async def test_repeating_a_request_id_spends_no_rate_budget(service: Service) -> None:
    """The per-connection limit is 30 messages a minute; 40 repeats of one requestId are one message."""
    token = service.token(user="u-repeat", tenant="t-repeat")
    rid = str(uuid.uuid4())
    frame = json.dumps({"action": "sendMessage", "requestId": rid, "text": "Count me once."})
    async with websockets.connect(f"{service.websocket}?token={token}") as ws:
        await ws.send(frame)
        await frames_until_terminal(ws, rid)
        for _ in range(40):
            await ws.send(frame)
        # Routes run concurrently (as in API Gateway): 40 acks, each followed by the stored outcome.
        seen = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(80)]
    kinds = sorted(f["type"] for f in seen)
    assert kinds == ["ack"] * 40 + ["done"] * 40, [f for f in seen if f["type"] not in ("ack", "done")][:2]
    assert {f["messageId"] for f in seen if f["type"] == "done"} and all(
        f.get("text") for f in seen if f["type"] == "done"
    )
