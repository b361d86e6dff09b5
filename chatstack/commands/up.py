"""`chatstack up`: run the whole service locally and print where to reach it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port."
)
@click.option(
    "--data-dir",
    default=".chatstack",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the embedded PostgreSQL, Redis and the dev signing key live.",
)
@click.option(
    "--model-url", default="", help="Use this LMI-compatible server instead of starting the local one."
)
@click.option(
    "--model-backend",
    default="extractive",
    show_default=True,
    type=click.Choice(["extractive", "transformers", "openai"]),
    help="Backend of the local model server.",
)
@click.option("--model-dir", default="", help="Model directory for the transformers backend.")
@click.option("--upstream", default="", help="OpenAI-compatible server for the openai backend.")
@click.option(
    "--token-rate",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Tokens per second of the extractive backend (0: as fast as possible).",
)
@click.option(
    "--flush-ms",
    default=100,
    show_default=True,
    type=click.IntRange(0, 5000),
    help="Gap between deltas at the start of an answer, in ms (it grows: CHATSTACK_FLUSH_MAX_INTERVAL_MS).",
)
@click.option(
    "--lambda-processes",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes running the Lambda handlers (Lambda execution environments).",
)
def up(
    host: str,
    port: int,
    data_dir: Path,
    model_url: str,
    model_backend: str,
    model_dir: str,
    upstream: str,
    token_rate: float,
    flush_ms: int,
    lambda_processes: int,
) -> None:
    """Run the chat service locally on embedded PostgreSQL and Redis."""
    from chatstack.local.runtime import LocalRuntime, RuntimeOptions, Urls

    extra: list[str] = []
    if model_backend == "transformers":
        if not model_dir:
            raise click.UsageError("--model-backend transformers needs --model-dir.")
        extra += ["--model-dir", model_dir]
    if model_backend == "openai":
        if not upstream:
            raise click.UsageError("--model-backend openai needs --upstream.")
        extra += ["--upstream", upstream]
    options = RuntimeOptions(
        host=host,
        port=port,
        data_dir=data_dir,
        model_url=model_url,
        model_backend=model_backend,
        model_args=extra,
        token_rate=token_rate,
        flush_interval_ms=flush_ms,
        lambda_processes=lambda_processes,
    )
    runtime = LocalRuntime(options)

    def ready(urls: Urls) -> None:
        state = {
            "base": urls.base,
            "websocket": urls.websocket,
            "page": urls.page,
            "model": urls.model,
            "pid": os.getpid(),
        }
        (data_dir / "runtime.json").write_text(json.dumps(state, indent=2))
        click.echo("chatstack is up")
        click.echo(f"  page:      {urls.page}")
        click.echo(f"  websocket: {urls.websocket}?token={urls.token}")
        click.echo(f"  REST:      {urls.base}/v1  (OpenAPI at {urls.base}/docs)")
        click.echo(f"  model:     {urls.model} ({model_backend if not model_url else 'external'})")
        click.echo(f"  healthz:   {urls.base}/healthz")
        click.echo("Press Ctrl+C to stop.", err=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runtime.stop)
        await runtime.serve(on_ready=ready)

    asyncio.run(main())
