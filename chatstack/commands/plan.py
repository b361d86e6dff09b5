"""`chatstack plan`: capacity and monthly cost of the deployment config at a given traffic, including
what it bills with no traffic at all. The numbers come from chatstack.planning (pure); this is the CLI."""

from __future__ import annotations

import json
from typing import NoReturn

import click

BAD_INPUT_EXIT = 2


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(BAD_INPUT_EXIT)


@click.command()
@click.option(
    "--config",
    "config_file",
    envvar="CHATSTACK_CDK_CONFIG",
    default=None,
    metavar="FILE",
    help="Deployment config (default cdk.config.example.json, or CHATSTACK_CDK_CONFIG).",
)
@click.option("--users", type=int, default=10_000, show_default=True, help="Concurrently connected users.")
@click.option("--messages-per-user-per-hour", type=float, default=4.0, show_default=True)
@click.option("--input-tokens", type=int, default=1_000, show_default=True, help="Prompt tokens per message.")
@click.option("--output-tokens", type=int, default=300, show_default=True, help="Answer tokens per message.")
@click.option("--profile", "profile_name", default=None, help="Model profile (default: the config's).")
@click.option("--flush-ms", type=int, default=100, show_default=True, help="Gap between deltas at first.")
@click.option("--flush-max-ms", type=int, default=500, show_default=True, help="The gap it grows to.")
@click.option(
    "--baseline-flush-ms", type=int, default=50, show_default=True, help="The fixed interval compared with."
)
@click.option(
    "--reconnects-per-user-per-hour", type=float, default=1.0, show_default=True, help="WebSocket churn."
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def plan(
    config_file: str | None,
    users: int,
    messages_per_user_per_hour: float,
    input_tokens: int,
    output_tokens: int,
    profile_name: str | None,
    flush_ms: int,
    flush_max_ms: int,
    baseline_flush_ms: int,
    reconnects_per_user_per_hour: float,
    fmt: str,
) -> None:
    """Capacity (endpoint instances, API Gateway budget, worker concurrency) and cost per month."""
    from chatstack.commands._cdk import CdkUnavailable, load_deployment_config
    from chatstack.planning import PlanError, PlanInputs, make_plan, plan_to_dict, render_table

    inputs = PlanInputs(
        users=users,
        messages_per_user_per_hour=messages_per_user_per_hour,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        flush_ms=flush_ms,
        flush_max_ms=flush_max_ms,
        baseline_flush_ms=baseline_flush_ms,
        reconnects_per_user_per_hour=reconnects_per_user_per_hour,
    )
    try:
        inputs.validate()
        config = load_deployment_config(config_file, "plan")
        result = make_plan(config, inputs, profile_name)
    except (PlanError, CdkUnavailable) as error:
        _fail(str(error))
    except ValueError as error:  # cdk.config.ConfigError, importable only once the checkout is on sys.path
        _fail(f"Invalid deployment config: {error}")
    except OSError as error:  # a directory, or a file it may not read
        _fail(f"Cannot read the deployment config {error.filename}: {error.strerror}.")
    if fmt == "json":
        click.echo(json.dumps(plan_to_dict(result), indent=2))
    else:
        click.echo(render_table(result))
