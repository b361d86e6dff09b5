"""`make_plan`: deployment config + traffic -> Plan. Pure: no I/O, no AWS calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatstack.planning import prices
from chatstack.planning.costs import region_lines
from chatstack.planning.model import (
    Plan,
    PlanError,
    PlanInputs,
    capacity,
    capacity_warnings,
    region_capacity,
    traffic_shares,
    worker_cost,
)
from sagemaker_containers.profiles import ModelProfile

if TYPE_CHECKING:
    from cdk.config import DeploymentConfig

NOTES = (
    "Prices are us-east-1 on-demand list prices applied to every region; [S] = secondary source, "
    "[U] = unverified recollection, none is verified. Finance reads billed cost from CUR.",
    "Not included: Aurora storage, I/O and backups, global replication transfer, CloudWatch logs and "
    "metrics, data transfer out, free tiers, Savings Plans.",
    "Answer duration = output tokens / per-stream tokens/s at a full batch; prefill time is not added.",
    "Batching assumes full batches; at low traffic batches are partial and the saving is smaller.",
)


def resolve_profile(config: DeploymentConfig, name: str | ModelProfile | None) -> ModelProfile:
    if name is None:
        return config.profile
    if not isinstance(name, str):
        return name
    from sagemaker_containers.profiles import ProfileError, get_profile

    try:
        return get_profile(name)
    except ProfileError as error:
        raise PlanError(error.message) from None


def make_plan(
    config: DeploymentConfig, inputs: PlanInputs, profile: str | ModelProfile | None = None
) -> Plan:
    """Capacity and monthly cost of ``config`` serving ``inputs`` with ``profile`` (a ready profile's
    name, a profile object, or None for the config's); PlanError (one sentence) on bad input."""
    inputs.validate()
    chosen = resolve_profile(config, profile)
    cap = capacity(chosen, inputs)
    per_region = tuple(
        region_capacity(config, chosen, inputs, cap, region, share)
        for region, share in traffic_shares(config).items()
    )
    worker = worker_cost(cap, prices.LAMBDA_ARM_GB_SECOND.usd)
    costs = tuple(line for r in per_region for line in region_lines(config, chosen, inputs, r, worker))
    known = [c.monthly_usd for c in costs if c.monthly_usd is not None]
    idle = [c for c in costs if c.bills_idle]
    unknown = tuple(dict.fromkeys(c.item for c in costs if c.price_usd is None))
    total = sum(known)
    warnings = capacity_warnings(cap, per_region)
    context = chosen.max_model_len
    if inputs.input_tokens + inputs.output_tokens > context:  # such a chat cannot happen: say so
        warnings.append(
            f"{inputs.input_tokens:,} input + {inputs.output_tokens:,} output tokens exceed the model's "
            f"context of {context:,} tokens ({chosen.name}): no chat is that long, so the figures are not "
            "a real workload."
        )
    if unknown:
        warnings.append(
            f"No price known for {', '.join(unknown)}: shown as unknown and left out of every total."
        )
    return Plan(
        inputs=inputs,
        deployment=config.name,
        routing_policy=config.routing_policy,
        regions=config.regions,
        capacity=cap,
        per_region=per_region,
        worker=worker,
        costs=costs,
        total_monthly_usd=total,
        idle_monthly_usd=sum(c.idle_monthly_usd for c in idle if c.idle_monthly_usd is not None),
        idle_items=tuple(dict.fromkeys(c.item for c in idle)),
        unknown_prices=unknown,
        cost_per_1k_answers_usd=total / (cap.answers_per_month / 1000.0),
        cost_per_1m_output_tokens_usd=total / (cap.output_tokens_per_month / 1e6),
        warnings=tuple(warnings),
        notes=NOTES,
    )
