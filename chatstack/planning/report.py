"""Plan renderers: a plain-text report for people and a JSON-ready mapping for tools."""

from __future__ import annotations

import dataclasses
from typing import Any

from chatstack.planning import prices
from chatstack.planning.model import ACCOUNT_RPS_LIMIT, NEW_CONNECTIONS_PER_S_LIMIT, CostLine, Plan


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    return dataclasses.asdict(plan)


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.2f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        # First column left-aligned (names), the rest right-aligned (numbers).
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [fmt(headers), fmt(["-" * w for w in widths]), *(fmt(row) for row in rows)]


def _capacity(plan: Plan) -> list[str]:
    cap = plan.capacity
    i = plan.inputs
    out = [
        f"Plan for '{plan.deployment}' ({plan.routing_policy} routing over {', '.join(plan.regions)})",
        f"Traffic: {i.users:,} users x {i.messages_per_user_per_hour:g} messages/h, {i.input_tokens:,} in / "
        f"{i.output_tokens:,} out tokens",
        f"Model: {cap.profile} on {cap.instance_type}: {cap.instance_tokens_per_s:,.0f} output tokens/s per "
        f"instance ({cap.throughput_source}) over {cap.streams_per_instance} streams = "
        f"{cap.stream_tokens_per_s:,.1f} tokens/s per stream",
        f"Little's law: {cap.answers_per_s:,.2f} answers/s x {cap.answer_s:,.1f} s per answer = "
        f"{cap.concurrent_generations:,.1f} generations in flight",
        "",
    ]
    headers = [
        "region",
        "share",
        "in flight",
        "instances (idle/max)",
        "tokens/s need/have",
        "posts/s",
        f"of {ACCOUNT_RPS_LIMIT:,} RPS",
        f"new conn/s (of {NEW_CONNECTIONS_PER_S_LIMIT})",
        "workers",
        "embed inst",
    ]
    rows = [
        [
            f"{r.region} ({r.role})",
            f"{r.share:.0%}",
            f"{r.concurrent_generations:,.1f}",
            f"{r.instances} ({r.idle_instances}/{r.max_instances})",
            f"{r.output_tokens_per_s_needed:,.0f}/{r.output_tokens_per_s_capacity:,.0f}",
            f"{r.posts_per_s:,.0f}",
            f"{r.account_rps_share:.1%}",
            f"{r.new_connections_per_s:,.2f} ({r.new_connections_share:.1%})",
            f"{r.worker_concurrency}",
            f"{r.embedding_instances}",
        ]
        for r in plan.per_region
    ]
    out += _table(headers, rows)
    out += _pacing(plan)
    w = plan.worker
    out += [
        "",
        f"Worker Lambda ({w.memory_mb} MB, batches of {w.batch_size} run concurrently): "
        f"{w.gb_seconds_per_month:,.0f} GB-s/month = {_usd(w.usd_per_month)}; one invocation per stream "
        f"would be {w.per_stream_gb_seconds_per_month:,.0f} GB-s = {_usd(w.per_stream_usd_per_month)} "
        f"(batching saves {_usd(w.saving_usd_per_month)}/month, {w.saving_ratio:g}x)",
        f"SQS: {sum(r.sqs_requests_per_month for r in plan.per_region):,.0f} requests/month",
        "",
    ]
    return out


def _pacing(plan: Plan) -> list[str]:
    """Deltas per stream-second, WebSocket messages and account RPS before (fixed) and after (paced)."""
    cap, i = plan.capacity, plan.inputs
    price = prices.WEBSOCKET_MESSAGE.usd
    out = [
        "",
        f"Delta pacing: first delta at once, then every {i.flush_ms} -> {i.flush_max_ms} ms over "
        f"{i.flush_ramp_ms} ms, a sentence end (every {i.tokens_per_sentence} tokens) after "
        f"{i.flush_early_share:.0%} of the gap: {cap.posts_per_answer} deltas per answer = "
        f"{cap.posts_per_stream_s:.2f} per stream-second; before, a delta every {i.baseline_flush_ms} ms: "
        f"{cap.baseline_posts_per_answer} = {cap.baseline_posts_per_stream_s:.2f}",
    ]
    headers = [
        "region",
        "WS messages/month before",
        "after",
        "cost before",
        "after",
        "RPS share before",
        "after",
    ]
    rows = [
        [
            r.region,
            f"{r.baseline_messages_per_month:,.0f}",
            f"{r.messages_per_month:,.0f}",
            _usd(r.baseline_messages_per_month * price),
            _usd(r.messages_per_month * price),
            f"{r.baseline_account_rps_share:.1%}",
            f"{r.account_rps_share:.1%}",
        ]
        for r in plan.per_region
    ]
    return out + _table(headers, rows)


def _cost_row(c: CostLine) -> list[str]:
    if c.price_usd is None:
        price = "unknown"
    elif 0 < c.price_usd < 0.001:
        # Per-request prices read better per million.
        price = f"${c.price_usd * 1e6:,.4g}/M {c.price_mark}"
    else:
        price = f"${c.price_usd:,.4g} {c.price_mark}"
    idle = _usd(c.idle_monthly_usd) if c.bills_idle else "-"
    return [c.item, c.region, f"{c.quantity:,.0f} {c.unit}", price, _usd(c.monthly_usd), idle]


def render_table(plan: Plan) -> str:
    out = _capacity(plan)
    out.append("Cost per month")
    out += _table(
        ["item", "region", "quantity", "unit price", "monthly", "idle"], [_cost_row(c) for c in plan.costs]
    )
    out += [
        "",
        f"Total: {_usd(plan.total_monthly_usd)}/month   "
        f"({_usd(plan.cost_per_1k_answers_usd)} per 1K answers, "
        f"{_usd(plan.cost_per_1m_output_tokens_usd)} per 1M output tokens)",
        f"Idle cost (no traffic): {_usd(plan.idle_monthly_usd)}/month, from: {', '.join(plan.idle_items)}",
    ]
    if plan.unknown_prices:
        out.append(f"Unknown prices (excluded from the totals): {', '.join(plan.unknown_prices)}")
    out += ["", *(f"warning: {w}" for w in plan.warnings), *(f"note: {n}" for n in plan.notes)]
    return "\n".join(out)
