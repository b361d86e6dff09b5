"""The planner's inputs and results, and the capacity model: a pure function from a deployment config
and a traffic assumption to numbers (no I/O, no AWS calls).

Capacity follows Little's law: generations in flight = answers started per second x seconds per
answer, where one answer takes output tokens / the tokens per second one stream gets when an instance
runs its full batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lambdas.core.deltas import Pacing, stream_posts
from lambdas.wiring import JOBS_QUEUE, WORKER

if TYPE_CHECKING:
    from cdk.config import DeploymentConfig
    from sagemaker_containers.profiles import ModelProfile

# API Gateway, per account and region (fact sheet 4.1): the throttle shared by HTTP, REST and WebSocket
# APIs and the @connections callback API, and the rate of new WebSocket connections.
ACCOUNT_RPS_LIMIT = 10_000
NEW_CONNECTIONS_PER_S_LIMIT = 500
WARN_SHARE = 0.5
# Frames besides the deltas that the worker posts per answer: `ack` (send handler) and `done`.
EXTRA_POSTS_PER_ANSWER = 2


class PlanError(ValueError):
    """Inputs the planner cannot work with; the message is one sentence."""


@dataclass(frozen=True, slots=True)
class PlanInputs:
    """The traffic to plan for, and the few assumptions the numbers rest on."""

    users: int = 10_000
    messages_per_user_per_hour: float = 4.0
    input_tokens: int = 1_000
    output_tokens: int = 300
    # Delta pacing, as lambdas/core/deltas.py applies it (defaults: the service's CHATSTACK_FLUSH_*).
    flush_ms: int = 100
    flush_max_ms: int = 500
    flush_ramp_ms: int = 1000
    flush_early_share: float = 0.7
    # A sentence ends every this many tokens (0: never), letting deltas leave early.
    tokens_per_sentence: int = 20
    # The rule the pacing replaced, shown beside it: one delta every baseline_flush_ms.
    baseline_flush_ms: int = 50
    # Users keep one WebSocket each; it reconnects at least every 2 h (the connection limit).
    reconnects_per_user_per_hour: float = 1.0
    # REST calls (conversation list, history) per chat message.
    rest_requests_per_message: float = 1.0
    # Bytes per @connections post through the NAT gateways (frame plus HTTP/TLS overhead).
    bytes_per_post: int = 1_024
    # Billed duration of every function except the worker (authorizer, connect, send, REST).
    short_function_s: float = 0.1
    hours_per_month: float = 730.0

    def validate(self) -> None:
        positive = {
            "users": self.users,
            "messages per user per hour": self.messages_per_user_per_hour,
            "input tokens": self.input_tokens,
            "output tokens": self.output_tokens,
            "flush interval (ms)": self.flush_ms,
            "baseline flush interval (ms)": self.baseline_flush_ms,
            "hours per month": self.hours_per_month,
        }
        for name, value in positive.items():
            if not value > 0:
                raise PlanError(f"The number of {name} must be greater than zero, not {value}.")
        non_negative = {
            "reconnects per user per hour": self.reconnects_per_user_per_hour,
            "REST requests per message": self.rest_requests_per_message,
            "bytes per post": self.bytes_per_post,
            "short function seconds": self.short_function_s,
            "tokens per sentence": self.tokens_per_sentence,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise PlanError(f"The number of {name} must not be negative, not {value}.")
        # Beyond these no figure means anything (no model takes a million tokens; a user sending more
        # than a message a second is a load test), and the pacing's simulation would run for hours.
        at_most = {
            "users": (self.users, 1_000_000_000),
            "messages per user per hour": (self.messages_per_user_per_hour, 3_600),
            "input tokens": (self.input_tokens, 1_000_000),
            "output tokens": (self.output_tokens, 1_000_000),
            "reconnects per user per hour": (self.reconnects_per_user_per_hour, 3_600),
        }
        for name, (value, most) in at_most.items():
            if not math.isfinite(value) or value > most:
                raise PlanError(f"The number of {name} must be at most {most:,}, not {value}.")
        try:
            self.pacing()
        except ValueError as error:
            raise PlanError(f"The delta pacing is not valid: {error}.") from None

    def pacing(self) -> Pacing:
        return Pacing(
            start_ms=self.flush_ms,
            max_ms=self.flush_max_ms,
            ramp_ms=self.flush_ramp_ms,
            early_share=self.flush_early_share,
        )

    def baseline_pacing(self) -> Pacing:
        return Pacing.fixed(self.baseline_flush_ms)


@dataclass(frozen=True, slots=True)
class Capacity:
    """Deployment-wide numbers."""

    profile: str
    instance_type: str
    instance_tokens_per_s: float
    throughput_source: str
    streams_per_instance: int
    target_concurrency_per_instance: int
    stream_tokens_per_s: float
    answer_s: float
    answers_per_s: float
    answers_per_month: float
    output_tokens_per_month: float
    concurrent_generations: float
    # Deltas per answer (ack and done not included) under the pacing, and under the baseline rule.
    posts_per_answer: int
    baseline_posts_per_answer: int

    @property
    def posts_per_stream_s(self) -> float:
        return self.posts_per_answer / self.answer_s

    @property
    def baseline_posts_per_stream_s(self) -> float:
        return self.baseline_posts_per_answer / self.answer_s


@dataclass(frozen=True, slots=True)
class RegionCapacity:
    """What one region must carry. ``share`` is its part of the traffic (failover: all on the primary)."""

    region: str
    role: str
    share: float
    answers_per_s: float
    concurrent_generations: float
    instances: int
    idle_instances: int
    max_instances: int
    output_tokens_per_s_needed: float
    output_tokens_per_s_capacity: float
    posts_per_s: float
    account_rps: float
    account_rps_share: float
    # WebSocket messages (sendMessage in; deltas, ack and done out) per month, and the same figures under
    # the baseline rule (one delta every baseline_flush_ms).
    messages_per_month: float
    baseline_posts_per_s: float
    baseline_account_rps: float
    baseline_account_rps_share: float
    baseline_messages_per_month: float
    new_connections_per_s: float
    new_connections_share: float
    worker_concurrency: int
    embedding_instances: int
    sqs_requests_per_month: float


@dataclass(frozen=True, slots=True)
class WorkerCost:
    """The worker's compute with batching (the jobs of one batch run concurrently) and without it."""

    batch_size: int
    memory_mb: int
    invocations_per_month: float
    gb_seconds_per_month: float
    usd_per_month: float | None
    per_stream_invocations_per_month: float
    per_stream_gb_seconds_per_month: float
    per_stream_usd_per_month: float | None
    saving_usd_per_month: float | None
    saving_ratio: float


@dataclass(frozen=True, slots=True)
class CostLine:
    """One billed resource. ``price_usd`` None means unknown: shown, never counted as zero."""

    item: str
    region: str
    quantity: float
    unit: str
    price_usd: float | None
    price_mark: str
    price_source: str
    monthly_usd: float | None
    bills_idle: bool
    idle_quantity: float
    idle_monthly_usd: float | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    inputs: PlanInputs
    deployment: str
    routing_policy: str
    regions: tuple[str, ...]
    capacity: Capacity
    per_region: tuple[RegionCapacity, ...]
    worker: WorkerCost
    costs: tuple[CostLine, ...]
    total_monthly_usd: float
    idle_monthly_usd: float
    idle_items: tuple[str, ...]
    unknown_prices: tuple[str, ...]
    cost_per_1k_answers_usd: float
    cost_per_1m_output_tokens_usd: float
    warnings: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())


def traffic_shares(config: DeploymentConfig) -> dict[str, float]:
    """Failover: the primary serves everything, secondaries idle at their minimum. Latency: even split."""
    if config.routing_policy == "failover":
        return {region: 1.0 if config.is_primary(region) else 0.0 for region in config.regions}
    return {region: 1.0 / len(config.regions) for region in config.regions}


def capacity(profile: ModelProfile, inputs: PlanInputs) -> Capacity:
    from sagemaker_containers.profiles import ProfileError

    if profile.is_local:
        raise PlanError(f"Profile '{profile.name}' runs only on the local runtime; plan a SageMaker profile.")
    try:
        instance_tps = profile.output_tokens_per_s
    except ProfileError as error:
        raise PlanError(error.message) from None
    streams = profile.max_batch_size * profile.workers_per_instance
    stream_tps = instance_tps / streams
    answer_s = inputs.output_tokens / stream_tps
    answers_per_s = inputs.users * inputs.messages_per_user_per_hour / 3600.0
    per_month = answers_per_s * 3600.0 * inputs.hours_per_month
    # The service's own batcher, run over one answer's tokens arriving at the stream's rate.
    posts = stream_posts(inputs.pacing(), stream_tps, answer_s, inputs.tokens_per_sentence)
    baseline = stream_posts(inputs.baseline_pacing(), stream_tps, answer_s, inputs.tokens_per_sentence)
    return Capacity(
        profile=profile.name,
        instance_type=profile.instance_type,
        instance_tokens_per_s=instance_tps,
        throughput_source="measured" if profile.throughput_tokens_per_s is not None else "roofline estimate",
        streams_per_instance=streams,
        target_concurrency_per_instance=profile.target_concurrency_per_instance,
        stream_tokens_per_s=stream_tps,
        answer_s=answer_s,
        answers_per_s=answers_per_s,
        answers_per_month=per_month,
        output_tokens_per_month=per_month * inputs.output_tokens,
        concurrent_generations=answers_per_s * answer_s,
        posts_per_answer=posts,
        baseline_posts_per_answer=baseline,
    )


# SQS event source mappings long-poll (20 s) with about five pollers per queue even when it is empty.
IDLE_SQS_POLLS_PER_HOUR = 5 * 3600 / 20


def region_capacity(
    config: DeploymentConfig,
    profile: ModelProfile,
    inputs: PlanInputs,
    cap: Capacity,
    region: str,
    share: float,
) -> RegionCapacity:
    idle_instances = 0 if config.inference.scale_to_zero else profile.min_instances
    concurrent = cap.concurrent_generations * share
    needed = math.ceil(concurrent / profile.target_concurrency_per_instance - 1e-9) if share else 0
    instances = max(idle_instances, needed)
    answers_per_s = cap.answers_per_s * share
    posts = answers_per_s * (cap.posts_per_answer + EXTRA_POSTS_PER_ANSWER)
    baseline_posts = answers_per_s * (cap.baseline_posts_per_answer + EXTRA_POSTS_PER_ANSWER)
    inbound = answers_per_s * (1 + inputs.rest_requests_per_message)
    month_s = 3600.0 * inputs.hours_per_month
    new_connections = inputs.users * share * inputs.reconnects_per_user_per_hour / 3600.0
    embed = config.embedding_profile
    queries_per_minute = answers_per_s * 60.0
    embedding_instances = max(
        embed.min_instances, math.ceil(queries_per_minute / embed.target_invocations_per_instance)
    )
    per_month = answers_per_s * 3600.0 * inputs.hours_per_month
    sqs = per_month * (1 + 2 / JOBS_QUEUE.batch_size) + IDLE_SQS_POLLS_PER_HOUR * inputs.hours_per_month
    return RegionCapacity(
        region=region,
        role="primary" if config.is_primary(region) else "secondary",
        share=share,
        answers_per_s=answers_per_s,
        concurrent_generations=concurrent,
        instances=instances,
        idle_instances=idle_instances,
        max_instances=profile.max_instances,
        output_tokens_per_s_needed=answers_per_s * inputs.output_tokens,
        output_tokens_per_s_capacity=instances * cap.instance_tokens_per_s,
        posts_per_s=posts,
        account_rps=posts + inbound,
        account_rps_share=(posts + inbound) / ACCOUNT_RPS_LIMIT,
        messages_per_month=(posts + answers_per_s) * month_s,
        baseline_posts_per_s=baseline_posts,
        baseline_account_rps=baseline_posts + inbound,
        baseline_account_rps_share=(baseline_posts + inbound) / ACCOUNT_RPS_LIMIT,
        baseline_messages_per_month=(baseline_posts + answers_per_s) * month_s,
        new_connections_per_s=new_connections,
        new_connections_share=new_connections / NEW_CONNECTIONS_PER_S_LIMIT,
        worker_concurrency=math.ceil(concurrent / JOBS_QUEUE.batch_size - 1e-9),
        embedding_instances=embedding_instances,
        sqs_requests_per_month=sqs,
    )


def worker_cost(cap: Capacity, gb_second_usd: float | None) -> WorkerCost:
    """One invocation holds a full batch for about one answer's duration; without batching, each stream
    holds its own invocation (and bills its own GB-seconds) for the same time."""
    batch = JOBS_QUEUE.batch_size
    gb = WORKER.memory_mb / 1024.0
    per_stream_invocations = cap.answers_per_month
    per_stream_gbs = per_stream_invocations * cap.answer_s * gb
    batched_gbs = per_stream_gbs / batch
    usd = None if gb_second_usd is None else batched_gbs * gb_second_usd
    per_stream_usd = None if gb_second_usd is None else per_stream_gbs * gb_second_usd
    return WorkerCost(
        batch_size=batch,
        memory_mb=WORKER.memory_mb,
        invocations_per_month=per_stream_invocations / batch,
        gb_seconds_per_month=batched_gbs,
        usd_per_month=usd,
        per_stream_invocations_per_month=per_stream_invocations,
        per_stream_gb_seconds_per_month=per_stream_gbs,
        per_stream_usd_per_month=per_stream_usd,
        saving_usd_per_month=None if usd is None or per_stream_usd is None else per_stream_usd - usd,
        saving_ratio=per_stream_gbs / batched_gbs if batched_gbs else float(batch),
    )


def capacity_warnings(cap: Capacity, regions: tuple[RegionCapacity, ...]) -> list[str]:
    warnings = []
    for r in regions:
        if r.instances > r.max_instances:
            warnings.append(
                f"{r.region}: needs {r.instances} endpoint instances but the profile allows at most "
                f"{r.max_instances}; raise max_instances (and the instance quota) or streams will queue."
            )
        if r.output_tokens_per_s_needed > r.output_tokens_per_s_capacity:
            warnings.append(
                f"{r.region}: needs {r.output_tokens_per_s_needed:,.0f} output tokens/s but {r.instances} "
                f"instances give {r.output_tokens_per_s_capacity:,.0f}."
            )
        if r.account_rps_share > WARN_SHARE:
            warnings.append(
                f"{r.region}: {r.account_rps:,.0f} API Gateway requests/s use {r.account_rps_share:.0%} "
                f"of the account's {ACCOUNT_RPS_LIMIT:,} RPS budget (shared with every API in the account); "
                "raise CHATSTACK_FLUSH_MAX_INTERVAL_MS or ask for a higher quota."
            )
        if r.new_connections_share > WARN_SHARE:
            warnings.append(
                f"{r.region}: {r.new_connections_per_s:,.1f} new connections/s use "
                f"{r.new_connections_share:.0%} of the {NEW_CONNECTIONS_PER_S_LIMIT}/s quota."
            )
        if r.worker_concurrency > JOBS_QUEUE.max_concurrency:
            warnings.append(
                f"{r.region}: the worker needs {r.worker_concurrency} concurrent invocations but the queue's "
                f"event source allows {JOBS_QUEUE.max_concurrency}; jobs will wait in the queue."
            )
    if cap.target_concurrency_per_instance > cap.streams_per_instance:
        warnings.append(
            f"target_concurrency_per_instance {cap.target_concurrency_per_instance} exceeds the "
            f"{cap.streams_per_instance} streams an instance runs at once; requests queue in the container."
        )
    return warnings
