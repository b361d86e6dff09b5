"""`chatstack up`: run the whole service locally and print where to reach it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import click

from chatstack.commands._local import data_dir_option


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port."
)
@data_dir_option
@click.option(
    "--model-url", default="", help="Use this LMI-compatible server instead of starting the local one."
)
@click.option(
    "--model-backend",
    default=None,
    type=click.Choice(["extractive", "transformers", "openai", "llamacpp"]),
    help="Backend of the local model server [default: extractive; with --model, the one that serves it].",
)
@click.option(
    "--model",
    default="",
    help="A real model: hf:ORG/NAME (downloaded once into the Hugging Face cache), a model directory "
    "or a .gguf file.",
)
@click.option("--model-file", default="", help="llamacpp: the .gguf file (in the hf: repo, or a path).")
@click.option("--model-dir", default="", help="Model directory for the transformers backend.")
@click.option(
    "--adapter", "adapters", multiple=True, metavar="NAME=DIR",
    help="A LoRA adapter the model server loads (repeatable); CHATSTACK_TENANT_ADAPTERS maps tenants to it.",
)
@click.option(
    "--ingest", "ingest_paths", multiple=True, type=click.Path(exists=True),
    help="Index these files or directories for the development tenant once the service is up.",
)
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
@click.option(
    "--as-deployed",
    "as_deployed",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Configure the service as the synthesized templates in this cdk.out/ do (see `make synth`).",
)
def up(
    host: str,
    port: int,
    data_dir: Path,
    model_url: str,
    model_backend: str | None,
    model: str,
    model_file: str,
    model_dir: str,
    adapters: tuple[str, ...],
    ingest_paths: tuple[str, ...],
    upstream: str,
    token_rate: float,
    flush_ms: int,
    lambda_processes: int,
    as_deployed: Path | None,
) -> None:
    """Run the chat service locally on embedded PostgreSQL and Redis."""
    from chatstack.commands._local import find_service

    running = find_service(data_dir)
    if running is not None:
        raise click.ClickException(
            f"chatstack is already running on {data_dir} (pid {running.pid}, {running.base}); "
            "stop it first or pick another --data-dir."
        )
    backend, extra, label, model_name = _model_server_args(
        model_backend, model, model_file, model_dir, upstream
    )
    # The model's own name, not the default profile's, in GET /v1/models and on usage rows.
    extra_env: dict[str, str] = {}
    if model_name and "CHATSTACK_MODEL_PROFILE" not in os.environ:
        extra_env["CHATSTACK_MODEL_PROFILE"] = model_name
    for item in adapters:
        name, sep, path = item.partition("=")
        if not (sep and name and path):
            raise click.BadParameter(f"takes NAME=DIR, not {item!r}.", param_hint="--adapter")
        extra += ["--adapter", item]
    new_data_dir = not (data_dir / "pg").exists()

    from chatstack.local.process import run_event_loop
    from chatstack.local.runtime import LocalRuntime, RuntimeOptions, Urls

    options = RuntimeOptions(
        host=host,
        port=port,
        data_dir=data_dir,
        model_url=model_url,
        model_backend=backend,
        model_args=extra,
        token_rate=token_rate,
        flush_interval_ms=flush_ms,
        lambda_processes=lambda_processes,
        as_deployed=as_deployed,
        extra_env=extra_env,
    )
    runtime = LocalRuntime(options)

    async def ready(urls: Urls) -> None:
        # runtime.json (base, websocket, page, model, pid, port, children) is written by the runtime
        # before this runs, and replaced atomically whenever it restarts a child.
        click.echo("chatstack is up")
        if as_deployed is None:
            click.echo(f"  page:      {urls.page}")
            click.echo(f"  websocket: {urls.websocket}?token={urls.token}")
        else:  # the templates' authorizers accept the Cognito stand-in's tokens, not the dev one
            click.echo(f"  websocket: {urls.websocket}?token=<a token of the Cognito stand-in>")
            click.echo(
                f"  sign in:   the Cognito stand-in, its ids in {data_dir / 'as-deployed.json'} "
                "(docs/operations.md), or an API key"
            )
        click.echo(f"  REST:      {urls.base}/v1  (OpenAPI at {urls.base}/docs)")
        token_note = "the token above" if as_deployed is None else "a stand-in token"
        click.echo(f"  OpenAI:    {urls.base}/v1/chat/completions  (api_key: {token_note}, or an API key)")
        click.echo(f"  model:     {urls.model} ({label if not model_url else 'external'})")
        click.echo(f"  healthz:   {urls.base}/healthz")
        if ingest_paths:
            await _ingest(data_dir, ingest_paths)
        elif new_data_dir:
            click.echo(
                f"Nothing is indexed yet: run `chatstack ingest docs/ --data-dir {data_dir}` so answers can "
                "quote your documents.",
                err=True,
            )
        click.echo("Press Ctrl+C to stop.", err=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runtime.stop)
        await runtime.serve(on_ready=ready)

    try:
        run_event_loop(main())
    except KeyboardInterrupt:  # a second Ctrl+C during shutdown: no traceback, just the usual status
        raise SystemExit(130) from None
    click.echo("chatstack stopped.", err=True)
    _abandon_lingering_work()


def _abandon_lingering_work(grace_s: float = 2.0) -> None:
    """Exit even if a request's thread is still working. A sync route runs on a worker thread that the
    interpreter waits for at exit, so an upload being indexed for a client that has gone kept the
    process busy for minutes after "chatstack stopped."; its database is stopped by now, and its open
    transaction rolled back with it, so nothing of it is half-written."""
    import threading
    import time

    deadline = time.monotonic() + grace_s
    waited = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for thread in waited:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [t for t in waited if t.is_alive()]
    if left:
        click.echo(f"Abandoned {len(left)} request(s) still running at shutdown.", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _model_server_args(
    backend: str | None, model: str, model_file: str, model_dir: str, upstream: str
) -> tuple[str, list[str], str, str]:
    """The model server's backend, its arguments, what `up` prints about it, and the model's name
    ("" keeps the configured profile name)."""
    from chatstack.commands._models import choose_model

    if model or (model_file and backend in (None, "llamacpp")):
        choice = choose_model(model, backend, model_file)
        return choice.backend, choice.args, choice.label, choice.name
    backend = backend or "extractive"
    if backend == "transformers":
        if not model_dir:
            raise click.UsageError("--model-backend transformers needs --model-dir (or --model).")
        name = Path(model_dir).name
        return backend, ["--model-dir", model_dir], f"transformers {name}", name
    if backend == "llamacpp":
        raise click.UsageError("--model-backend llamacpp needs --model-file X.gguf (or --model hf:ORG/NAME).")
    if backend == "openai":
        if not upstream:
            raise click.UsageError("--model-backend openai needs --upstream.")
        return backend, ["--upstream", upstream], f"openai {upstream}", ""
    return backend, [], backend, ""


async def _ingest(data_dir: Path, paths: tuple[str, ...]) -> None:
    """`chatstack ingest` in its own process against this service: the embedding model's memory goes
    back when it ends, and its progress and summary reach the terminal as they would by hand."""
    cmd = [sys.executable, "-m", "chatstack.cli", "ingest", *paths, "--data-dir", str(data_dir)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL)
    if await proc.wait() != 0:
        click.echo("Ingesting failed (see above); the service is running anyway.", err=True)
