"""Accepting a new conversation that brings earlier turns (the OpenAI-compatible route's requests).
Real PostgreSQL and Redis; the in-process transports of test_recovery."""

from __future__ import annotations

import json
import uuid
from typing import Any

from lambdas import protocol
from lambdas.adapters.auth import Identity
from lambdas.services.chat import ChatService
from tests.functional.test_recovery import Model, make_deps


def test_a_new_conversations_earlier_turns_are_in_place_before_its_job_exists(
    pg_url: str, redis_url: str
) -> None:
    """The OpenAI-compatible route seeds a new conversation with the body's earlier turns. They were
    written after the job was queued, so a fast worker read no history, answered without it and
    billed a different prompt; now they are written before the enqueue."""
    d = make_deps(pg_url, redis_url, Model())
    seen: list[Any] = []
    send = d.queue.client.send_message

    def send_and_look(**kwargs: Any) -> Any:
        job = json.loads(kwargs["MessageBody"])
        seen.append(d.cache.history(job["conversationId"]))  # what a worker would read now
        return send(**kwargs)

    d.queue.client.send_message = send_and_look
    turns = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hello Ada."}]
    identity = Identity(tenant_id=f"t-{uuid.uuid4().hex[:8]}", user_id="ada", scopes=frozenset({"chat"}))
    msg = protocol.SendMessage(action="sendMessage", requestId=uuid.uuid4(), text="What is my name?")
    ChatService(d).accept(identity, msg, "openai-1", history=turns)
    assert seen == [turns]
