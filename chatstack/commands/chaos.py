"""`chatstack chaos`: inject faults into a local service mid-stream and print what its clients saw."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import click

from chatstack.chaos import FAULTS, OBSERVE_HEAL_S, SETTLE_S

HELP = (
    "Break a running `chatstack up` on purpose, mid-stream, and print a table of what clients saw.\n\n"
    "\b\nFaults:\n" + "\n".join(f"  {f.name}: {f.summary}" for f in FAULTS.values())
)


@click.command(help=HELP)
@click.option("--fault", "names", multiple=True, type=click.Choice(list(FAULTS)), help="A fault, repeatable.")
@click.option("--all", "every", is_flag=True, help="Every fault, one after the other.")
@click.option("--chats", default=20, show_default=True, type=click.IntRange(1, 200), help="Concurrent chats.")
@click.option(
    "--data-dir",
    default=".chatstack",
    show_default=True,
    envvar="CHATSTACK_DATA_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="The service to break; if none runs there, one is started (RAG off) and stopped at the end.",
)
@click.option(
    "--token-rate",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Tokens per second of a service this command starts (answers must take a few seconds).",
)
def chaos(names: tuple[str, ...], every: bool, chats: int, data_dir: Path, token_rate: float) -> None:
    if every:
        names = tuple(FAULTS)
    if not names:
        raise click.UsageError("Name a fault with --fault NAME, or use --all.")
    from chatstack.chaos import ServiceDir, ensure_ready, run_fault, table

    started = None
    if not (data_dir / "runtime.json").exists() or not _running(data_dir):
        click.echo(f"No service runs on {data_dir}; starting one (--token-rate {token_rate:g}).", err=True)
        started = _start(data_dir, token_rate)
    service = ServiceDir(data_dir)
    click.echo(
        f"Breaking the service on {data_dir} (pid {service.pid()}), {chats} chats per fault.", err=True
    )

    async def main() -> list[str]:
        results, failed = [], []
        for index, name in enumerate(names):
            try:
                if await ensure_ready(service, patience_s=90 if index == 0 else 30):
                    click.echo("  (the service was broken: restarted it on the same data dir)", err=True)
                click.echo(f"{name}: {FAULTS[name].summary} ...", err=True)
                result = await run_fault(service, FAULTS[name], chats=chats)
            except (RuntimeError, TimeoutError, OSError) as exc:  # the service is gone for good
                click.echo(f"  FAIL: could not run {name}: {exc}", err=True)
                failed.append(name)
                break
            results.append(result)
            click.echo(f"  hit: {', '.join(result.hit)}", err=True)
            for note in result.notes:
                click.echo(f"  {note}", err=True)
            for problem in result.problems():
                click.echo(f"  FAIL: {problem}", err=True)
                failed.append(name)
            if result.problems():
                click.echo("\n".join(result.details(limit=5)[1:]), err=True)
        click.echo(table(results))
        return failed

    try:
        failed = asyncio.run(main())
    finally:
        if started is not None:
            service.stop()
            started.wait(30)
    click.echo(
        f"done/error/closed/hung: how each stream ended within {SETTLE_S:.0f} s of the fault. answered: "
        "a stored answer reached by the stream, resume or re-sending the same sendMessage; failed: the last "
        "re-send ended in error; lost: neither. heal: the first new chat that succeeded "
        f"(>{OBSERVE_HEAL_S:.0f}: none).",
        err=True,
    )
    if failed:
        raise SystemExit(
            f"{len(set(failed))} of {len(names)} faults broke a promise: {', '.join(sorted(set(failed)))}."
        )


def _running(data_dir: Path) -> bool:
    from chatstack.chaos import ServiceDir

    try:
        ServiceDir(data_dir)
    except RuntimeError:
        return False
    return True


def _start(data_dir: Path, token_rate: float) -> subprocess.Popen[bytes]:
    """`chatstack up` on a free port, its output in the data dir's parent as `<name>-up.log`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "runtime.json").unlink(missing_ok=True)
    log = open(data_dir.parent / f"{data_dir.name}-up.log", "wb")  # noqa: SIM115 (closed with the process)
    cmd = [sys.executable, "-m", "chatstack.cli", "up", "--port", "0", "--data-dir", str(data_dir)]
    # RAG off, as in tests/faults: retrieval is not what the faults test, and the embedding model's load
    # would count in every restart's time to heal.
    proc = subprocess.Popen(
        [*cmd, "--token-rate", str(token_rate)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "CHATSTACK_RAG_ENABLED": "false"},
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"`chatstack up` exited with {proc.returncode}; see {log.name}.")
        if _running(data_dir):
            return proc
        time.sleep(0.5)
    proc.kill()
    raise click.ClickException(f"`chatstack up` was not ready in 180 s; see {log.name}.")
