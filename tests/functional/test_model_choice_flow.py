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


def test_each_model_is_billed_and_reserved_at_its_own_price(pg_url: str, redis_url: str) -> None:
    """Two offered models at different prices: the usage row costs the model that answered, and the
    budget a message reserves is the asked model's (so a budget that pays for the cheap model's worst
    case refuses the dear one's)."""
    from lambdas.errors import QuotaExceeded
    from lambdas.services.limits import LimitService, LimitSet

    d = make_deps(pg_url, redis_url, Model(), models="small,large", model_prices="large=4.0",
                  model_price_per_1k_output_tokens_usd=1.0, input_token_cost_ratio=0.0,
                  max_output_tokens=100, limits_enabled=True)
    identity = Identity(tenant_id=f"t-{uuid.uuid4().hex[:8]}", user_id="u", scopes=frozenset({"chat"}))
    for name in ("small", "large"):
        msg = protocol.SendMessage(
            action="sendMessage", requestId=uuid.uuid4(), text="hi", options={"model": name, "maxTokens": 100}
        )
        ChatService(d).accept(identity, msg, "c1")
        GenerationService(d).run(Job.parse(sent(d).jobs[-1]["job"]))
    with d.db.transaction() as conn:
        rows = conn.execute(
            "SELECT model_profile, output_tokens, cost_usd FROM usage_records WHERE tenant_id = %s",
            (identity.tenant_id,),
        ).fetchall()
    cost = {r["model_profile"]: (r["output_tokens"], float(r["cost_usd"])) for r in rows}
    assert cost["small"][1] == pytest.approx(cost["small"][0] * 1.0 / 1000)
    assert cost["large"][1] == pytest.approx(cost["large"][0] * 4.0 / 1000)
    # A budget of what is spent plus $0.2: 100 output tokens reserve $0.1 on small, $0.4 on large.
    spent = sum(c for _, c in cost.values())
    LimitService(d).set_overrides(
        identity.tenant_id, LimitSet(budget_usd_per_month=spent + 0.2), updated_by="test"
    )
    dear = protocol.SendMessage(
        action="sendMessage", requestId=uuid.uuid4(), text="hi", options={"model": "large", "maxTokens": 100}
    )
    with pytest.raises(QuotaExceeded):
        ChatService(d).accept(identity, dear, "c1")
    cheap = protocol.SendMessage(
        action="sendMessage", requestId=uuid.uuid4(), text="hi", options={"model": "small", "maxTokens": 100}
    )
    assert isinstance(ChatService(d).accept(identity, cheap, "c1"), protocol.Ack)
