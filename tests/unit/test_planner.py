"""`chatstack plan`: the capacity model (Little's law) on hand-checked inputs, the cost totals and the
CLI's refusals. Everything here is pure arithmetic over the real deployment config and profiles."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cdk.config import DeploymentConfig, load_config
from chatstack.cli import main
from chatstack.planning import PlanError, PlanInputs, make_plan
from lambdas.config import Settings
from lambdas.core.deltas import Pacing, stream_posts
from lambdas.wiring import JOBS_QUEUE
from sagemaker_containers.profiles import ModelProfile, get_profile

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "cdk.config.example.json"


def config(**overrides: Any) -> DeploymentConfig:
    return load_config({"config": str(EXAMPLE), "chatstack": overrides}, ROOT)


def measured_profile(tokens_per_s: float = 400.0) -> ModelProfile:
    # max_batch_size 8 on one A10G: 400 tokens/s per instance is 50 tokens/s per stream.
    return get_profile("llama-3.1-8b-instruct").model_copy(update={"throughput_tokens_per_s": tokens_per_s})


# The old fixed rule (a delta every 50 ms) keeps the hand arithmetic simple; the pacing has its own tests.
HAND = PlanInputs(
    users=3_600,
    messages_per_user_per_hour=10,
    input_tokens=500,
    output_tokens=300,
    flush_ms=50,
    flush_max_ms=50,
    flush_early_share=1.0,
)


def test_littles_law_on_hand_checked_inputs() -> None:
    plan = make_plan(config(), HAND, measured_profile())
    cap = plan.capacity
    assert cap.stream_tokens_per_s == pytest.approx(50.0)
    assert cap.answer_s == pytest.approx(6.0)  # 300 tokens / 50 tokens/s
    assert cap.answers_per_s == pytest.approx(10.0)  # 3,600 users x 10 / 3,600 s
    assert cap.concurrent_generations == pytest.approx(60.0)  # 10/s x 6 s
    primary, secondary = plan.per_region
    assert primary.instances == 8  # ceil(60 / 8 per instance)
    assert secondary.instances == secondary.idle_instances == 2  # failover: the secondary idles at its min
    # A token every 20 ms and a delta once 50 ms have passed: tokens 0, 3, 6, ..., 297 each leave with
    # the two before them (100 deltas) and the last two are the final flush: 101, plus ack and done.
    assert cap.posts_per_answer == cap.baseline_posts_per_answer == 101
    assert primary.posts_per_s == pytest.approx(10 * (101 + 2))
    assert primary.account_rps == pytest.approx(1_030 + 10 * 2)  # plus sendMessage and one REST call
    assert primary.account_rps_share == pytest.approx(0.105)
    assert primary.messages_per_month == pytest.approx((1_030 + 10) * 3600 * 730)
    assert primary.new_connections_per_s == pytest.approx(1.0)
    assert primary.worker_concurrency == 6  # 60 streams / batches of 10
    assert primary.output_tokens_per_s_needed == pytest.approx(3_000)
    assert primary.output_tokens_per_s_capacity == pytest.approx(8 * 400)


def test_posts_are_capped_by_the_token_rate() -> None:
    slow = make_plan(config(), HAND, measured_profile(tokens_per_s=80.0))  # 10 tokens/s per stream
    assert slow.capacity.answer_s == pytest.approx(30.0)
    primary = slow.per_region[0]
    assert primary.posts_per_s == pytest.approx(300 * 10 + 10 * 2)


def test_the_plan_counts_deltas_with_the_services_own_pacing() -> None:
    """The plan runs lambdas/core/deltas.py's batcher: its defaults are the service's settings', and
    its deltas per answer are what that batcher emits for one answer at the stream's token rate."""
    assert PlanInputs().pacing() == Pacing.from_settings(Settings())
    plan = make_plan(config(), PlanInputs(output_tokens=300), measured_profile())
    cap = plan.capacity
    assert cap.posts_per_answer == stream_posts(Pacing.from_settings(Settings()), 50.0, 6.0, 20)
    assert cap.baseline_posts_per_answer == stream_posts(Pacing.fixed(50), 50.0, 6.0, 20)


def test_paced_deltas_cut_messages_and_the_account_rps_share_at_10000_users() -> None:
    plan = make_plan(config(), PlanInputs(users=10_000), measured_profile(tokens_per_s=160.0))
    cap, primary = plan.capacity, plan.per_region[0]
    assert cap.posts_per_stream_s <= 4 < cap.baseline_posts_per_stream_s
    assert primary.messages_per_month < primary.baseline_messages_per_month / 5
    assert primary.account_rps_share < primary.baseline_account_rps_share / 5
    messages = next(
        c for c in plan.costs if c.item == "API Gateway WebSocket messages" and c.region == primary.region
    )
    assert messages.quantity == pytest.approx(primary.messages_per_month)


def test_endpoint_instances_scale_with_users() -> None:
    counts = [
        make_plan(config(), PlanInputs(users=users, output_tokens=300), measured_profile())
        .per_region[0]
        .instances
        for users in (1_000, 10_000, 100_000)
    ]
    assert counts[0] < counts[1] < counts[2]
    assert counts[2] == math.ceil(100_000 * 4 / 3600 * 6 / 8)


def test_latency_routing_splits_the_traffic_between_regions() -> None:
    plan = make_plan(config(routing_policy="latency"), HAND, measured_profile())
    assert [r.share for r in plan.per_region] == [0.5, 0.5]
    assert [r.concurrent_generations for r in plan.per_region] == pytest.approx([30.0, 30.0])
    assert [r.instances for r in plan.per_region] == [4, 4]


def test_batching_saves_the_ratio_of_the_batch_size() -> None:
    worker = make_plan(config(), HAND, measured_profile()).worker
    assert worker.batch_size == JOBS_QUEUE.batch_size
    assert worker.per_stream_gb_seconds_per_month / worker.gb_seconds_per_month == pytest.approx(
        JOBS_QUEUE.batch_size
    )
    assert worker.saving_ratio == pytest.approx(JOBS_QUEUE.batch_size)
    assert worker.per_stream_usd_per_month is not None and worker.usd_per_month is not None
    assert worker.saving_usd_per_month == pytest.approx(
        worker.per_stream_usd_per_month - worker.usd_per_month
    )
    # 36,000 answers/h x 730 h x 6 s x 1 GB.
    assert worker.per_stream_gb_seconds_per_month == pytest.approx(36_000 * 730 * 6 * 1.0)


def test_idle_total_is_the_sum_of_the_listed_idle_items() -> None:
    plan = make_plan(config(), HAND, measured_profile())
    idle_lines = [c for c in plan.costs if c.bills_idle]
    assert plan.idle_monthly_usd == pytest.approx(sum(c.idle_monthly_usd or 0.0 for c in idle_lines))
    assert set(plan.idle_items) == {c.item for c in idle_lines}
    assert "SageMaker endpoint (ml.g5.2xlarge)" in plan.idle_items
    assert "Lambda requests" not in plan.idle_items
    # Idle endpoints: 2 instances in each of 2 regions, around the clock.
    endpoint = [c for c in idle_lines if c.item.startswith("SageMaker endpoint")]
    assert sum(c.idle_quantity for c in endpoint) == pytest.approx(4 * 730)
    assert plan.idle_monthly_usd < plan.total_monthly_usd


def test_unknown_prices_are_flagged_and_left_out_of_the_totals() -> None:
    plan = make_plan(config(database={"instance_class": "db.r5.large"}), HAND, measured_profile())
    aurora = [c for c in plan.costs if c.item == "Aurora PostgreSQL (db.r5.large)"]
    assert len(aurora) == 2
    assert all(c.monthly_usd is None and c.idle_monthly_usd is None for c in aurora)
    assert all(c.price_mark == "unknown" for c in aurora)
    assert "Aurora PostgreSQL (db.r5.large)" in plan.unknown_prices
    assert any("Aurora PostgreSQL (db.r5.large)" in w for w in plan.warnings)
    known = [c.monthly_usd for c in plan.costs if c.monthly_usd is not None]
    assert plan.total_monthly_usd == pytest.approx(sum(known))
    priced = make_plan(config(), HAND, measured_profile())
    assert priced.unknown_prices == ()
    aurora_priced = sum(c.monthly_usd or 0 for c in priced.costs if c.item.startswith("Aurora"))
    assert priced.total_monthly_usd - plan.total_monthly_usd == pytest.approx(aurora_priced)


def test_cost_per_answer_and_per_token_follow_the_total() -> None:
    plan = make_plan(config(), HAND, measured_profile())
    answers = 36_000 * 730
    assert plan.cost_per_1k_answers_usd == pytest.approx(plan.total_monthly_usd / (answers / 1000))
    assert plan.cost_per_1m_output_tokens_usd == pytest.approx(plan.total_monthly_usd / (answers * 300 / 1e6))


def test_a_chat_longer_than_the_models_context_is_warned_about() -> None:
    """--output-tokens 100000 priced a workload no chat can be, without a word."""
    profile = measured_profile()
    fits = make_plan(config(), PlanInputs(input_tokens=1000, output_tokens=300), profile)
    assert not any("context" in w for w in fits.warnings)
    too_long = make_plan(config(), PlanInputs(input_tokens=1000, output_tokens=100_000), profile)
    assert any(f"context of {profile.max_model_len:,} tokens" in w for w in too_long.warnings)


def test_a_busy_account_budget_is_warned_about() -> None:
    busy = PlanInputs(
        users=100_000, messages_per_user_per_hour=10, output_tokens=300, flush_ms=20, flush_max_ms=20
    )
    plan = make_plan(config(), busy, measured_profile())
    assert plan.per_region[0].account_rps_share > 0.5
    assert any("RPS budget" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        (PlanInputs(users=0), "users must be greater than zero"),
        (PlanInputs(users=-5), "users must be greater than zero"),
        (PlanInputs(output_tokens=0), "output tokens must be greater than zero"),
        (PlanInputs(flush_ms=0), "flush interval"),
        (PlanInputs(flush_ms=600, flush_max_ms=500), "pacing is not valid"),
    ],
)
def test_bad_inputs_are_refused_in_one_sentence(inputs: PlanInputs, words: str) -> None:
    with pytest.raises(PlanError, match=words):
        make_plan(config(), inputs)


def test_a_local_profile_cannot_be_planned() -> None:
    with pytest.raises(PlanError, match="local runtime"):
        make_plan(config(), HAND, "local-extractive")


# ---- the CLI -------------------------------------------------------------------------------------


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["plan", "--config", str(EXAMPLE), *args])


def test_cli_prints_a_table_with_the_idle_cost() -> None:
    result = run("--users", "3600", "--messages-per-user-per-hour", "10")
    assert result.exit_code == 0, result.output
    assert "Little's law" in result.output
    assert "Idle cost (no traffic): $" in result.output
    assert "WS messages/month before" in result.output and "RPS share before" in result.output
    assert "Total: $" in result.output


def test_cli_json_output_parses() -> None:
    result = run("--format", "json", "--users", "2000", "--profile", "llama-3.1-8b-instruct-awq")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["capacity"]["profile"] == "llama-3.1-8b-instruct-awq"
    assert data["inputs"]["users"] == 2000
    assert data["idle_monthly_usd"] == pytest.approx(
        sum(
            c["idle_monthly_usd"]
            for c in data["costs"]
            if c["bills_idle"] and c["idle_monthly_usd"] is not None
        )
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--users", "0"], "The number of users must be greater than zero, not 0.\n"),
        (["--users", "-3"], "The number of users must be greater than zero, not -3.\n"),
        (["--profile", "no-such-model"], "Unknown model profile 'no-such-model'"),
        # These ran for ever (the pacing's simulation of a 10^12-token answer) or raised OverflowError.
        (["--output-tokens", "1000000000000"], "output tokens must be at most 1,000,000"),
        (["--messages-per-user-per-hour", "1e308"], "messages per user per hour must be at most 3,600"),
        (["--messages-per-user-per-hour", "inf"], "messages per user per hour must be at most 3,600"),
        (["--users", "2000000000"], "users must be at most 1,000,000,000"),
    ],
)
def test_cli_refuses_bad_input_with_one_sentence_and_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert result.output.count("\n") == 1


def test_cli_refuses_a_config_that_is_a_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["plan", "--config", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    expected = f"Invalid deployment config: config file '{tmp_path.name}' is a directory, not a file.\n"
    assert result.output == expected


def test_cli_refuses_a_missing_config_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["plan", "--config", str(tmp_path / "absent.json")])
    assert result.exit_code == 2
    assert result.output == "Invalid deployment config: config file 'absent.json' does not exist.\n"
