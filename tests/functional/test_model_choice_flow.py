"""options.model through the chat flow, real PostgreSQL and Redis: an unknown model is refused at
sendMessage before anything is stored, and the usage row names the model that answered."""

from __future__ import annotations

import uuid

import pytest

from lambdas import protocol
from lambdas.adapters.auth import Identity
from lambdas.errors import BadRequest
from lambdas.services.chat import ChatService
from lambdas.services.generation import GenerationService, Job
from tests.functional.test_recovery import Model, make_deps, sent


def test_an_unknown_model_is_refused_before_the_message_is_stored(pg_url: str, redis_url: str) -> None:
    d = make_deps(pg_url, redis_url, Model(), models="small,large")
    identity = Identity(tenant_id=f"t-{uuid.uuid4().hex[:8]}", user_id="u", scopes=frozenset({"chat"}))
    rid = uuid.uuid4()
    msg = protocol.SendMessage(action="sendMessage", requestId=rid, text="hi", options={"model": "huge"})
    with pytest.raises(BadRequest, match="small, large"):
        ChatService(d).accept(identity, msg, "c1")
    with d.db.transaction() as conn:
        assert conn.execute("SELECT 1 FROM messages WHERE request_id = %s", (rid,)).fetchone() is None
    assert d.cache.request(str(rid)) is None and sent(d).jobs == []


def test_the_usage_row_names_the_model_that_answered(pg_url: str, redis_url: str) -> None:
    d = make_deps(pg_url, redis_url, Model(), models="small,large=http://127.0.0.1:9/invocations")
    identity = Identity(tenant_id=f"t-{uuid.uuid4().hex[:8]}", user_id="u", scopes=frozenset({"chat"}))
    msg = protocol.SendMessage(
        action="sendMessage", requestId=uuid.uuid4(), text="hi", options={"model": "small"}
    )
    ChatService(d).accept(identity, msg, "c1")
    job = Job.parse(sent(d).jobs[-1]["job"])
    GenerationService(d).run(job)
    with d.db.transaction() as conn:
        row = conn.execute("SELECT model_profile FROM usage_records WHERE request_id = %s",
                           (job.request_id,)).fetchone()
    assert row == {"model_profile": "small"}
