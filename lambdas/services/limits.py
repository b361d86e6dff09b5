"""Rate limits, quotas and the monthly budget: which rules apply to a request, and what a refusal says.

Rules (docs/identity.md): new connections per IP; messages per connection and per user per minute;
tokens per user and per tenant per minute; tokens per user and per tenant per UTC day and month; a
monthly dollar budget per tenant summed from the usage ledger. Each tenant's limits are the settings'
defaults overlaid with what its admin set (`PUT /v1/limits`); 0 means "no limit".

A refusal is `RateLimited` (retryAfter: when the bucket will admit again) or `QuotaExceeded` (retryAfter
and the reset time in the message). Nothing is spent unless every rule admits.

An admitted message reserves its worst case (the prompt's input bound plus its maxTokens, and their
dollars) from every quota and the budget, and takes one of its user's answer-in-flight slots; the worker
settles by requestId (charges what the answer used, releases the rest). So concurrent messages cannot
overrun a quota: each must fit beside what the others may still use.
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

from lambdas import protocol
from lambdas.adapters import identity_repo, usage_repo
from lambdas.adapters.auth import Identity
from lambdas.adapters.limits import Bucket, Counter, Hold, LimitStore, Verdict
from lambdas.config import Settings
from lambdas.core.prompt import PER_MESSAGE_OVERHEAD, PROMPT_JOINS, answer_cap
from lambdas.core.tokens import estimate_tokens
from lambdas.errors import QuotaExceeded, RateLimited
from lambdas.runtime import Deps
from lambdas.services import models

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

    # Strict: `true` or "5" for a count is a mistake to refuse, not a value to coerce.
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True, strict=True
    )

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


def reserved_tokens(settings: Settings, msg: protocol.SendMessage, *, history: bool = False) -> int:
    """The most tokens one message can cost: its prompt's input bound plus its output cap.

    A new conversation has no history, so its input is the system prompt, the retrieved context
    (at most `rag_context_tokens`) and the text; a follow-up, or a new conversation seeded with
    earlier turns (`history`: the OpenAI-compatible route's), may fill the model's whole input budget
    with history (build_prompt does), so it reserves that budget.
    """
    max_tokens = answer_cap(msg.options.max_tokens, settings.max_output_tokens)
    budget = max(0, settings.model_max_context_tokens - max_tokens)
    if msg.conversation_id is not None or history:
        return budget + max_tokens
    context = settings.rag_context_tokens if msg.options.rag and settings.rag_top_k else 0
    fixed = estimate_tokens(settings.system_prompt) + estimate_tokens(msg.text) + context
    return min(budget, fixed + 2 * PER_MESSAGE_OVERHEAD + PROMPT_JOINS) + max_tokens


def token_cost_usd(
    settings: Settings, input_tokens: int, output_tokens: int, model: str | None = None
) -> Decimal:
    """The estimated cost of tokens of `model` (None: the default; docs/identity.md, "Estimated cost")."""
    weighted = Decimal(output_tokens) + Decimal(input_tokens) * Decimal(str(settings.input_token_cost_ratio))
    return weighted * Decimal(str(settings.price_per_1k_output_tokens(model))) / 1000


@dataclass(frozen=True, slots=True)
class _Quota:
    counter: Counter
    user_id: str | None  # None: the tenant's
    start: datetime
    end: datetime
    label: str
    dollars: bool = False


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

    def admit_message(
        self,
        identity: Identity,
        connection_id: str,
        request: protocol.SendMessage | None = None,
        *,
        history: bool = False,
    ) -> None:
        """One sendMessage: check every rule, spend one message from each message bucket if all admit.

        With `request`, also reserve its worst case from every quota and the budget and take an
        answer-in-flight slot, held under its requestId until `settle` (or the hold's TTL). `history`:
        the request starts a conversation with earlier turns (`reserved_tokens`)."""
        if not self.s.limits_enabled:
            return
        now = self.clock()
        tenant, user = identity.tenant_id, identity.user_id
        limits = self.limits(tenant)
        periods = Periods(datetime.fromtimestamp(now, UTC))
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
        hold: Hold | None = None
        tokens, dollars = 0, 0.0
        if request is not None:
            tokens = reserved_tokens(self.s, request, history=history)
            max_out = answer_cap(request.options.max_tokens, self.s.max_output_tokens)
            # the model that will answer: its price (each offered model may have its own)
            model = models.choose(self.s, request.options.model).name
            dollars = float(token_cost_usd(self.s, tokens - max_out, max_out, model))
            hold = Hold(
                request_id=str(request.request_id),
                ledger_key=f"{tag}:holds",
                in_flight_key=f"{tag}:fly:{uid}",
                in_flight_cap=self.s.limit_answers_in_flight_per_user,
                ttl_ms=self.s.limits_reservation_ttl_s * 1000,
            )
        quotas = self._quotas(tenant, user, limits, periods, reserve=(tokens, dollars))
        now_ms = int(now * 1000)
        for _ in range(3):
            verdict = self.store.take(buckets, [q.counter for q in quotas], now_ms, hold)
            if not verdict.missing or verdict.refused >= 0:
                break
            self._seed(tenant, [quotas[i - len(buckets)] for i in verdict.missing], periods)
        self._raise_for(verdict, [why for _, why in live], quotas, now)
        if verdict.missing:  # seeded three times and still missing: Redis is evicting our keys
            raise RateLimited("The service is busy; please retry.", retry_after=1)

    def settle(
        self, request_id: str, tokens: int, cost_usd: Decimal, *, tenant_id: str, user_id: str
    ) -> None:
        """When an answer ends (done, cancelled or failed): release what its admission reserved (if its
        hold has not expired) and charge what it used. `tenant_id` and `user_id` are the request's as
        PostgreSQL stored them (the worker checks its job against them), so they name the hold."""
        if self.s.limits_enabled:
            self.store.release(f"{_tag(tenant_id)}:holds", request_id)
        self.charge(tenant_id, user_id, tokens, cost_usd)

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
        counters: list[tuple[str, float]] = [
            (q.counter.key, float(cost_usd) if q.dollars else tokens)
            for q in self._quotas(tenant_id, user_id, None, periods)
        ]
        self.store.spend(buckets, [(key, amount) for key, amount in counters if amount > 0], int(now * 1000))

    # ---- internals ------------------------------------------------------------------------------
    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _quotas(
        self,
        tenant: str,
        user: str,
        limits: LimitSet | None,
        p: Periods,
        reserve: tuple[int, float] = (0, 0.0),
    ) -> list[_Quota]:
        """The quota counters and the budget; with `limits` None, every one (for charging), limited or
        not. `reserve`: the tokens and dollars an admitted request holds from each."""
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
                out.append(_Quota(Counter(key, limit, reserve[0]), owner, start, end, label))
        budget = 0.0 if limits is None else float(limits.budget_usd_per_month or 0)
        if limits is None or budget:
            label = f"Your organisation's monthly budget of ${budget:,.2f}"
            counter = Counter(self._spend_key(tenant, p), budget, reserve[1])
            out.append(_Quota(counter, None, p.month_start, p.month_end, label, dollars=True))
        return out

    def _seed(self, tenant: str, quotas: list[_Quota], p: Periods) -> None:
        """Counters start from the ledger: a lost Redis (or a new period) never forgives usage. The
        budget's spend is re-read from the ledger now and then; answers in between add their cost."""
        with self.d.db.transaction() as conn:
            values: list[int | Decimal] = [
                usage_repo.spend_since(conn, tenant_id=tenant, start=q.start)
                if q.dollars
                else usage_repo.tokens_since(conn, tenant_id=tenant, user_id=q.user_id, start=q.start)
                for q in quotas
            ]
        for q, value in zip(quotas, values, strict=True):
            if q.dollars:
                ttl_ms = min(self.s.budget_refresh_s * 1000, _ms_until(p.month_end, p.now))
            else:
                ttl_ms = _ms_until(q.end, p.now) + MINUTE_MS
            self.store.seed(q.counter.key, str(value), ttl_ms)

    def _spend_key(self, tenant: str, p: Periods) -> str:
        return f"{_tag(tenant)}:spend:{p.month_start.strftime('%Y%m')}"

    def _raise_for(
        self, verdict: Verdict, bucket_reasons: list[str], quotas: list[_Quota], now: float
    ) -> None:
        if verdict.admitted or verdict.refused < 0:
            return
        if verdict.refused < len(bucket_reasons):
            raise RateLimited(bucket_reasons[verdict.refused], retry_after=_seconds(verdict.retry_after_ms))
        if verdict.refused >= len(bucket_reasons) + len(quotas):
            cap = self.s.limit_answers_in_flight_per_user
            raise RateLimited(
                f"You have {cap} answers in progress; wait for one to finish.", retry_after=1
            )
        q = quotas[verdict.refused - len(bucket_reasons)]
        if verdict.counter_state == "held":
            raise QuotaExceeded(
                f"{q.label} has too little left for this message beside the answers in progress; "
                "retry when one has finished.",
                retry_after=5.0,
                resets_at=_iso(q.end),
            )
        if verdict.counter_state == "short":
            raise QuotaExceeded(
                f"{q.label} has too little left for this message (it may use up to the model's limit); "
                f"ask for fewer maxTokens or wait until it resets at {_iso(q.end)}.",
                retry_after=max(1.0, q.end.timestamp() - now),
                resets_at=_iso(q.end),
            )
        spent = "is spent" if q.dollars else "is used up"
        raise QuotaExceeded(
            f"{q.label} {spent}; it resets at {_iso(q.end)}.",
            retry_after=max(1.0, q.end.timestamp() - now),
            resets_at=_iso(q.end),
        )


def _seconds(ms: int) -> float:
    return float(max(1, math.ceil(ms / 1000))) if ms >= 0 else 60.0


def _ms_until(end: datetime, now: datetime) -> int:
    return max(1, int((end - now).total_seconds() * 1000))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
