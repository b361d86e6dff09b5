"""Rate limits, quotas and the monthly budget: which rules apply to a request, and what a refusal says.

Rules (docs/identity.md): new connections per IP; messages per connection and per user per minute;
tokens per user and per tenant per minute; tokens per user and per tenant per UTC day and month; a
monthly dollar budget per tenant summed from the usage ledger. Each tenant's limits are the settings'
defaults overlaid with what its admin set (`PUT /v1/limits`); 0 means "no limit".

A refusal is `RateLimited` (retryAfter: when the bucket will admit again) or `QuotaExceeded` (retryAfter
and the reset time in the message). Nothing is spent unless every rule admits.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from lambdas.adapters import identity_repo, usage_repo
from lambdas.adapters.auth import Identity
from lambdas.adapters.limits import Bucket, Counter, LimitStore, Verdict
from lambdas.config import Settings
from lambdas.errors import QuotaExceeded, RateLimited
from lambdas.runtime import Deps

MINUTE_MS = 60_000
MAX_COUNT = 10**12  # a limit beyond this is a typo, not a policy
MAX_USD = 10**9

# Each tenant-level limit and the setting that gives its default.
DEFAULTS_FROM = {
    "messages_per_connection_per_minute": "limit_messages_per_connection_per_minute",
    "messages_per_user_per_minute": "limit_messages_per_user_per_minute",
    "tokens_per_user_per_minute": "limit_tokens_per_user_per_minute",
    "tokens_per_tenant_per_minute": "limit_tokens_per_tenant_per_minute",
    "tokens_per_user_per_day": "quota_tokens_per_user_per_day",
    "tokens_per_user_per_month": "quota_tokens_per_user_per_month",
    "tokens_per_tenant_per_day": "quota_tokens_per_tenant_per_day",
    "tokens_per_tenant_per_month": "quota_tokens_per_tenant_per_month",
    "budget_usd_per_month": "budget_usd_per_tenant_per_month",
}


class LimitSet(BaseModel):
    """A tenant's limits; 0 means no limit. As an override set, an absent (null) field keeps the default."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    messages_per_connection_per_minute: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    messages_per_user_per_minute: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    tokens_per_user_per_minute: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    tokens_per_tenant_per_minute: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    tokens_per_user_per_day: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    tokens_per_user_per_month: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    tokens_per_tenant_per_day: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    tokens_per_tenant_per_month: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    budget_usd_per_month: float | None = Field(default=None, ge=0, le=MAX_USD, allow_inf_nan=False)

    def overrides(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def default_limits(settings: Settings) -> LimitSet:
    return LimitSet.model_validate({name: getattr(settings, attr) for name, attr in DEFAULTS_FROM.items()})


@dataclass(frozen=True, slots=True)
class Periods:
    """The UTC day and month that contain one instant."""

    now: datetime

    @property
    def day_start(self) -> datetime:
        return self.now.replace(hour=0, minute=0, second=0, microsecond=0)

    @property
    def day_end(self) -> datetime:
        return self.day_start + timedelta(days=1)

    @property
    def month_start(self) -> datetime:
        return self.day_start.replace(day=1)

    @property
    def month_end(self) -> datetime:
        start = self.month_start
        if start.month == 12:
            return start.replace(year=start.year + 1, month=1)
        return start.replace(month=start.month + 1)


def _tag(tenant_id: str) -> str:
    # Quoted so that no id can forge another's key; the braces keep a tenant's keys on one cluster slot,
    # which a multi-key script needs in cluster mode.
    return "cs:{" + quote(tenant_id, safe="") + "}"


def _id(value: str) -> str:
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class _Quota:
    counter: Counter
    user_id: str | None  # None: the tenant's
    start: datetime
    end: datetime
    label: str


class LimitService:
    def __init__(self, deps: Deps, clock: Callable[[], float] = time.time) -> None:
        self.d = deps
        self.s = deps.settings
        self.clock = clock
        self.store = LimitStore(deps.cache.r)

    # ---- configuration ----------------------------------------------------------------------------
    def overrides(self, tenant_id: str) -> LimitSet:
        key = f"{_tag(tenant_id)}:limits"
        cached = self.store.get(key)
        if cached is not None:
            return LimitSet.model_validate(json.loads(cached))
        with self.d.db.transaction() as conn:
            found = LimitSet.model_validate(identity_repo.limit_overrides(conn, tenant_id))
        self.store.put(key, json.dumps(found.overrides()), self.s.limits_cache_s * 1000)
        return found

    def limits(self, tenant_id: str) -> LimitSet:
        """The tenant's effective limits: defaults overlaid with its overrides."""
        return default_limits(self.s).model_copy(update=self.overrides(tenant_id).overrides())

    def set_overrides(self, tenant_id: str, overrides: LimitSet, *, updated_by: str) -> None:
        with self.d.db.transaction() as conn:
            identity_repo.set_limit_overrides(
                conn, tenant_id=tenant_id, overrides=overrides.overrides(), updated_by=updated_by
            )
        self.store.delete(f"{_tag(tenant_id)}:limits")

    # ---- admission ------------------------------------------------------------------------------
    def admit_connection(self, source_ip: str) -> None:
        """A new WebSocket connection from `source_ip` (before its credentials are even checked)."""
        limit = self.s.limit_connections_per_ip_per_minute
        if not self.s.limits_enabled or limit == 0:
            return
        bucket = Bucket(f"cs:ip:{_id(source_ip or 'unknown')}", limit, MINUTE_MS, cost=1)
        verdict = self.store.take([bucket], [], self._now_ms())
        if not verdict.admitted:
            raise RateLimited(
                "Too many new connections from this address.", retry_after=_seconds(verdict.retry_after_ms)
            )

    def admit_message(self, identity: Identity, connection_id: str) -> None:
        """One sendMessage: check every rule, spend one message from each message bucket if all admit."""
        if not self.s.limits_enabled:
            return
        now = self.clock()
        tenant, user = identity.tenant_id, identity.user_id
        limits = self.limits(tenant)
        periods = Periods(datetime.fromtimestamp(now, UTC))
        self._check_budget(tenant, limits, periods)
        tag, uid = _tag(tenant), _id(user)
        rules = [
            (
                limits.messages_per_connection_per_minute,
                f"{tag}:rl:conn:{_id(connection_id)}",
                1,
                "You are sending messages too fast on this connection.",
            ),
            (
                limits.messages_per_user_per_minute,
                f"{tag}:rl:msg:{uid}",
                1,
                "You are sending messages too fast.",
            ),
            (
                limits.tokens_per_user_per_minute,
                f"{tag}:rl:tok:{uid}",
                0,
                "You have used your tokens for this minute.",
            ),
            (
                limits.tokens_per_tenant_per_minute,
                f"{tag}:rl:tok",
                0,
                "Your organisation has used its tokens for this minute.",
            ),
        ]
        live = [
            (Bucket(key, int(limit), MINUTE_MS, cost=cost), why) for limit, key, cost, why in rules if limit
        ]
        buckets = [b for b, _ in live]
        quotas = self._quotas(tenant, user, limits, periods)
        now_ms = int(now * 1000)
        for _ in range(3):
            verdict = self.store.take(buckets, [q.counter for q in quotas], now_ms)
            if not verdict.missing or verdict.refused >= 0:
                break
            self._seed(tenant, [quotas[i - len(buckets)] for i in verdict.missing], periods)
        self._raise_for(verdict, [why for _, why in live], quotas, now)
        if verdict.missing:  # seeded three times and still missing: Redis is evicting our keys
            raise RateLimited("The service is busy; please retry.", retry_after=1)

    def charge(self, tenant_id: str, user_id: str, tokens: int, cost_usd: Decimal) -> None:
        """After an answer (also one cut short): spend its tokens and dollars from every rule."""
        if not self.s.limits_enabled or (tokens <= 0 and cost_usd <= 0):
            return
        now = self.clock()
        limits = self.limits(tenant_id)
        periods = Periods(datetime.fromtimestamp(now, UTC))
        tag, uid = _tag(tenant_id), _id(user_id)
        buckets = [
            Bucket(key, int(limit), MINUTE_MS, cost=tokens)
            for limit, key in (
                (limits.tokens_per_user_per_minute, f"{tag}:rl:tok:{uid}"),
                (limits.tokens_per_tenant_per_minute, f"{tag}:rl:tok"),
            )
            if limit
        ]
        counters = [(q.counter.key, tokens) for q in self._quotas(tenant_id, user_id, None, periods)]
        self.store.spend(buckets, counters, int(now * 1000))
        if cost_usd > 0:
            self.store.add_float_if_exists(self._spend_key(tenant_id, periods), float(cost_usd))

    # ---- internals ------------------------------------------------------------------------------
    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _quotas(self, tenant: str, user: str, limits: LimitSet | None, p: Periods) -> list[_Quota]:
        """The quota counters; with `limits` None, every counter (for charging), limited or not."""
        tag, uid = _tag(tenant), _id(user)
        day, month = p.day_start.strftime("%Y%m%d"), p.month_start.strftime("%Y%m")
        specs = [
            (
                "tokens_per_user_per_day",
                f"{tag}:qu:{uid}:d:{day}",
                user,
                p.day_start,
                p.day_end,
                "Your daily token quota",
            ),
            (
                "tokens_per_user_per_month",
                f"{tag}:qu:{uid}:m:{month}",
                user,
                p.month_start,
                p.month_end,
                "Your monthly token quota",
            ),
            (
                "tokens_per_tenant_per_day",
                f"{tag}:qt:d:{day}",
                None,
                p.day_start,
                p.day_end,
                "Your organisation's daily token quota",
            ),
            (
                "tokens_per_tenant_per_month",
                f"{tag}:qt:m:{month}",
                None,
                p.month_start,
                p.month_end,
                "Your organisation's monthly token quota",
            ),
        ]
        out = []
        for field, key, owner, start, end, label in specs:
            limit = 0 if limits is None else int(getattr(limits, field) or 0)
            if limits is None or limit:
                out.append(_Quota(Counter(key, limit), owner, start, end, label))
        return out

    def _seed(self, tenant: str, quotas: list[_Quota], p: Periods) -> None:
        """Counters start from the ledger: a lost Redis (or a new period) never forgives usage."""
        with self.d.db.transaction() as conn:
            values = [
                usage_repo.tokens_since(conn, tenant_id=tenant, user_id=q.user_id, start=q.start)
                for q in quotas
            ]
        for q, value in zip(quotas, values, strict=True):
            self.store.seed(q.counter.key, value, _ms_until(q.end, p.now) + MINUTE_MS)

    def _spend_key(self, tenant: str, p: Periods) -> str:
        return f"{_tag(tenant)}:spend:{p.month_start.strftime('%Y%m')}"

    def _check_budget(self, tenant: str, limits: LimitSet, p: Periods) -> None:
        budget = limits.budget_usd_per_month or 0
        if not budget:
            return
        key = self._spend_key(tenant, p)
        cached = self.store.get(key)
        if cached is None:
            with self.d.db.transaction() as conn:
                spent = usage_repo.spend_since(conn, tenant_id=tenant, start=p.month_start)
            # Re-read from the ledger now and then; answers in between add their cost (charge()).
            ttl_ms = min(self.s.budget_refresh_s * 1000, _ms_until(p.month_end, p.now))
            self.store.put(key, str(spent), ttl_ms)
        else:
            spent = Decimal(cached)
        if spent >= Decimal(str(budget)):
            raise QuotaExceeded(
                f"Your organisation's monthly budget of ${budget:,.2f} is spent; it resets at "
                f"{_iso(p.month_end)}.",
                retry_after=_ms_until(p.month_end, p.now) / 1000,
                resets_at=_iso(p.month_end),
            )

    def _raise_for(
        self, verdict: Verdict, bucket_reasons: list[str], quotas: list[_Quota], now: float
    ) -> None:
        if verdict.admitted or verdict.refused < 0:
            return
        if verdict.refused < len(bucket_reasons):
            raise RateLimited(bucket_reasons[verdict.refused], retry_after=_seconds(verdict.retry_after_ms))
        q = quotas[verdict.refused - len(bucket_reasons)]
        raise QuotaExceeded(
            f"{q.label} is used up; it resets at {_iso(q.end)}.",
            retry_after=max(1.0, q.end.timestamp() - now),
            resets_at=_iso(q.end),
        )


def _seconds(ms: int) -> float:
    return float(max(1, math.ceil(ms / 1000))) if ms >= 0 else 60.0


def _ms_until(end: datetime, now: datetime) -> int:
    return max(1, int((end - now).total_seconds() * 1000))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
