"""`chatstack model`: list the ready model profiles, render one to LMI configuration, check a profile file.

Every failure prints one sentence on stderr and exits with status 2, so scripts and CI can tell a bad
profile (2) from a crash (1).
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

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


# ---- staging weights in S3 -----------------------------------------------------------------------
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
SKIPPED_PARTS = {".git", ".cache", "__pycache__"}


def stage_files(source: Path) -> list[tuple[Path, str]]:
    """(file, key relative to the prefix) for every file the container needs from a model directory."""
    files = [
        (path, path.relative_to(source).as_posix())
        for path in sorted(source.rglob("*"))
        if path.is_file() and not SKIPPED_PARTS & set(path.relative_to(source).parts)
    ]
    names = {key for _, key in files}
    if "config.json" not in names or not any(key.endswith(WEIGHT_SUFFIXES) for key in names):
        _fail(f"{source} is not a model directory: it needs config.json and weight files.")
    return files


def upload(
    s3: Any, files: list[tuple[Path, str]], bucket: str, prefix: str, *, use_threads: bool = True
) -> tuple[int, int]:
    """Copies the files under s3://bucket/prefix with one progress bar; a key already there with the
    same size is kept (re-running after an interruption sends only what is missing). Returns
    (files sent, bytes sent)."""
    from boto3.s3.transfer import TransferConfig
    from tqdm import tqdm

    existing: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        existing.update({obj["Key"]: int(obj["Size"]) for obj in page.get("Contents", [])})
    todo = [(p, prefix + k) for p, k in files if existing.get(prefix + k) != p.stat().st_size]
    total = sum(p.stat().st_size for p, _ in todo)
    chunk = 64 * 1024**2
    config = TransferConfig(
        multipart_threshold=chunk, multipart_chunksize=chunk, max_concurrency=8, use_threads=use_threads
    )
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"s3://{bucket}/{prefix}", file=sys.stderr) as bar:
        for path, key in todo:
            s3.upload_file(str(path), bucket, key, Config=config, Callback=bar.update)
    return len(todo), total


def _snapshot(model_id: str, revision: str | None) -> Path:
    """The profile's weights from the Hugging Face hub (HF_TOKEN for gated models), into its cache."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        _fail("Downloading needs huggingface_hub (the ml extra); or pass --source DIR.")
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]
    try:
        return Path(snapshot_download(repo_id=model_id, revision=revision, allow_patterns=patterns))
    except Exception as error:
        _fail(f"Could not download {model_id} from the Hugging Face hub: {str(error).splitlines()[0]}")


@model.command("stage")
@click.argument("name")
@click.option("--bucket", required=True, help="S3 bucket in the endpoint's region.")
@click.option("--prefix", default=None, help="Key prefix (default: the profile name).")
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A local model directory (default: download the profile's model from the Hugging Face hub).",
)
@click.option("--region", default=None, help="The bucket's region (default: the AWS configuration's).")
def stage_command(
    name: str, bucket: str, prefix: str | None, source: Path | None, region: str | None
) -> None:
    """Copy profile NAME's weights to S3, so the endpoint loads them from there (no hub, no HF token)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    # S3's bucket naming rules (General purpose bucket naming rules, S3 User Guide), checked before the
    # weights are downloaded, not by botocore after.
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket) or ".." in bucket:
        _fail(f"'{bucket}' is not an S3 bucket name (3-63 lower-case letters, digits, '.' and '-').")
    try:
        profile = get_profile(name)
    except ProfileError as error:
        _fail(error.message)
    if source is None and profile.model_id.startswith("s3://"):
        _fail(f"Profile '{name}' already loads its weights from {profile.model_id}.")
    prefix = (prefix if prefix is not None else profile.name).strip("/") + "/"
    files = stage_files(source or _snapshot(profile.model_id, profile.revision))
    try:  # no credentials, a refused bucket, no network: botocore's reason in one sentence
        sent, size = upload(boto3.client("s3", region_name=region), files, bucket, prefix)
    except (BotoCoreError, ClientError) as error:
        _fail(f"Staging to s3://{bucket}/{prefix} failed: {str(error).splitlines()[0].rstrip('.')}.")
    uri = f"s3://{bucket}/{prefix}"
    kept = len(files) - sent
    click.echo(f"{uri}: {len(files)} files, {sent} sent ({size / 1e9:.2f} GB), {kept} already there")
    click.echo(f'Deploy with it: "inference": {{"weights_s3_uri": "{uri}"}} in the deployment config.')
