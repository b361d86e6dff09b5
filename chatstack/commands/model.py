"""`chatstack model`: list the ready model profiles, render one to LMI configuration, check a profile file.

Every failure prints one sentence on stderr and exits with status 2, so scripts and CI can tell a bad
profile (2) from a crash (1).
"""

from __future__ import annotations

import shlex
from typing import NoReturn

import click

from sagemaker_containers.profiles import (
    EmbeddingProfile,
    ModelProfile,
    ProfileError,
    get_profile,
    list_embedding_profiles,
    list_instances,
    list_profiles,
    load_profile_file,
    validate_profile,
)

BAD_PROFILE_EXIT = 2


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(BAD_PROFILE_EXIT)


def _money(value: float) -> str:
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _cost_line(profile: ModelProfile) -> str:
    """Price, throughput and cost per 1K output tokens, or why one of them is unknown."""
    try:
        price = profile.instance_price_per_hour_usd
        if price == 0:
            return "price $0/h (local)"
        source = "configured" if profile.throughput_tokens_per_s is not None else "roofline estimate"
        return (
            f"{_money(price)}/h per instance ({profile.instance.price_confidence}), "
            f"{profile.output_tokens_per_s:,.0f} output tokens/s ({source}), "
            f"{_money(profile.cost_per_1k_output_tokens_usd())} per 1K output tokens"
        )
    except ProfileError as error:
        return f"cost unknown: {error.message}"


@click.group()
def model() -> None:
    """Model profiles for the LMI (vLLM) container on SageMaker."""


@model.command("profiles")
def profiles_command() -> None:
    """List the ready profiles with instance, sizing and estimated cost."""
    for profile in list_profiles():
        instance = profile.instance
        click.echo(profile.name)
        if profile.is_local:
            click.echo(f"  local backend '{profile.model_id}', batch {profile.max_batch_size}, price $0/h")
            continue
        quant = profile.checkpoint_quantization or profile.quantization or "none"
        click.echo(
            f"  {profile.model_id} on {profile.instance_count} x {instance.name} "
            f"({instance.gpus} x {instance.gpu_model}), TP {profile.tensor_parallel_degree}, "
            f"{profile.dtype}, quantization {quant}, batch {profile.max_batch_size}, "
            f"context {profile.max_model_len}"
        )
        click.echo(f"  {_cost_line(profile)}")
        if profile.description:
            click.echo(f"  {profile.description}")


def _embedding_cost_line(profile: EmbeddingProfile) -> str:
    try:
        price = profile.instance_price_per_hour_usd
    except ProfileError as error:
        return f"cost unknown: {error.message}"
    return (
        f"{_money(price)}/h per instance ({profile.price_confidence}), "
        f"{_money(profile.idle_price_per_hour_usd)}/h idle at {profile.min_instances} instance(s)"
    )


@model.command("embeddings")
def embeddings_command() -> None:
    """List the embedding endpoint profiles (TEI): model, instance, scaling and idle cost."""
    for profile in list_embedding_profiles():
        kind = "GPU" if profile.uses_gpu else "CPU"
        click.echo(profile.name)
        click.echo(
            f"  {profile.model_id} ({profile.dimensions} dimensions) on {profile.instance_count} x "
            f"{profile.instance_type} ({kind}, {profile.framework} {profile.tei_version}), "
            f"{profile.min_instances}-{profile.max_instances} instances"
        )
        click.echo(f"  {_embedding_cost_line(profile)}")
        if profile.description:
            click.echo(f"  {profile.description}")


@model.command("instances")
def instances_command() -> None:
    """List the instance catalog: GPUs, GPU memory and the sourced on-demand price."""
    for row in list_instances():
        price = (
            "no sourced price" if row.price_per_hour_usd is None else f"{_money(row.price_per_hour_usd)}/h"
        )
        click.echo(
            f"{row.name:18} {row.gpus} x {row.gpu_model:18} {row.gpu_memory_gib:6.2f} GiB  {price:16} "
            f"[{row.price_confidence}] {row.price_date}"
        )


@model.command("render")
@click.argument("name")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["env", "properties"]),
    default="env",
    show_default=True,
    help="KEY=VALUE lines for the container environment, or a serving.properties file (never both).",
)
def render_command(name: str, fmt: str) -> None:
    """Validate the ready profile NAME and print its LMI container configuration."""
    try:
        profile = get_profile(name)
        validate_profile(profile)
        if fmt == "properties":
            click.echo(profile.render_properties(), nl=False)
            return
        for key, value in profile.render_env().items():
            click.echo(f"{key}={shlex.quote(value)}")
    except ProfileError as error:
        _fail(error.message)


@model.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def check_command(file: str) -> None:
    """Validate your own profile FILE (JSON, or YAML when pyyaml is installed)."""
    try:
        profile = load_profile_file(file)
        memory = validate_profile(profile)
    except ProfileError as error:
        _fail(error.message)
    click.echo(f"Profile '{profile.name}' is valid for {profile.instance_type}.")
    if not profile.is_local:
        click.echo(f"  memory: {memory.describe()}")
        click.echo(f"  environment: {len(profile.render_env())} entries")
    click.echo(f"  {_cost_line(profile)}")
