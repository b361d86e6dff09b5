"""`chatstack bench overhead`: what the pipeline adds to time to first token.

For each concurrency level, N chats start at once (a) straight against the model server's
`/invocations`, and (b) through the whole local service: WebSocket -> authorizer-checked connection ->
sendMessage handler (PostgreSQL, Redis, SQS stand-in) -> worker -> model server -> @connections ->
client. Time to first token is measured at the client in both cases; the report gives p50/p95/p99 of
each and their difference. Connections are opened before the clock starts, as a chat app keeps its
socket open.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import httpx

from chatstack.client import ChatClient

QUESTION = "Latency budgets matter for chat. What matters for chat?"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 2),
        "p95": round(percentile(ms, 95), 2),
        "p99": round(percentile(ms, 99), 2),
        "mean": round(statistics.fmean(ms), 2) if ms else float("nan"),
    }


async def closed_loop(
    n: int, chats_per_user: int, stagger_s: float, chat: Callable[[int], Awaitable[float | None]]
) -> tuple[list[float], int]:
    """N users, each asking `chats_per_user` times in a row (a closed loop, like a load tool's virtual
    users); starts are spread over `stagger_s` so the N chats overlap as in steady state rather than
    arriving as one burst."""
    ttfts: list[float] = []
    failures = 0

    async def user(i: int) -> None:
        nonlocal failures
        await asyncio.sleep(stagger_s * i / n)
        for _ in range(chats_per_user):
            try:
                ttft = await chat(i)
            except Exception:  # a failed chat is counted, not fatal: the report shows failures
                ttft = None
            if ttft is None:
                failures += 1
            else:
                ttfts.append(ttft)

    await asyncio.gather(*(user(i) for i in range(n)))
    return ttfts, failures


async def direct_ttft(
    model_url: str, n: int, chats: int, stagger_s: float, max_tokens: int
) -> tuple[list[float], int]:
    body = {
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": QUESTION},
        ],
        "max_tokens": max_tokens,
        "stream": True,
    }
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(_: int) -> float | None:
            started = time.perf_counter()
            first: float | None = None
            async with client.stream("POST", f"{model_url}/invocations", json=body) as r:
                async for line in r.aiter_lines():
                    if first is None and '"content"' in line:
                        first = time.perf_counter() - started
            return first

        return await closed_loop(n, chats, stagger_s, one)


async def pipeline_ttft(
    ws_url: str, tokens: list[str], n: int, chats: int, stagger_s: float, max_tokens: int
) -> tuple[list[float], int]:
    clients = await asyncio.gather(
        *(ChatClient.connect(ws_url, token=tokens[i], open_timeout=120) for i in range(n))
    )
    try:

        async def one(i: int) -> float | None:
            reply = await clients[i].send(QUESTION, options={"maxTokens": max_tokens, "rag": False})
            await reply.text(timeout=300)
            return reply.ttft_s

        return await closed_loop(n, chats, stagger_s, one)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


@click.command()
@click.option(
    "--concurrency",
    "levels",
    default="1,50,500",
    show_default=True,
    help="Comma-separated numbers of simultaneous chats.",
)
@click.option(
    "--token-rate", default=20.0, show_default=True, help="Tokens/s per stream of the model server."
)
@click.option("--max-tokens", default=64, show_default=True, help="Answer length per chat.")
@click.option(
    "--chats", "chats_per_user", default=4, show_default=True, help="Chats each user asks in a row."
)
@click.option(
    "--lambda-processes", default=2, show_default=True, help="Lambda host processes of `chatstack up`."
)
@click.option("--out", default=".bench/overhead.json", show_default=True, type=click.Path(dir_okay=False))
def overhead(
    levels: str, token_rate: float, max_tokens: int, chats_per_user: int, lambda_processes: int, out: str
) -> None:
    """Time to first token through the whole local pipeline versus the model server alone."""
    from chatstack.local.identity import DevIdentity

    counts = [int(x) for x in levels.split(",") if x.strip()]
    if not counts or min(counts) < 1:
        raise click.BadParameter("give positive integers, e.g. 1,50,500", param_hint="--concurrency")
    data_dir = Path(tempfile.mkdtemp(prefix="chatstack-bench-"))

    async def main() -> dict[str, Any]:
        import subprocess

        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chatstack.cli",
                "up",
                "--port",
                "0",
                "--data-dir",
                str(data_dir),
                "--token-rate",
                str(token_rate),
                "--lambda-processes",
                str(lambda_processes),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # One benchmark client opens hundreds of connections from one IP as one user: the per-IP and
            # per-user limits would (rightly) refuse it.
            env={**os.environ, "CHATSTACK_LIMITS_ENABLED": "false"},
        )
        try:
            state = data_dir / "runtime.json"
            deadline = time.monotonic() + 180
            while not state.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise click.ClickException("chatstack up did not start; run it by hand to see why.")
                await asyncio.sleep(0.2)
            info = json.loads(state.read_text())
            identity = DevIdentity(data_dir / "identity")
            tokens = [
                identity.mint(user=f"bench-{i}", tenant="bench", ttl_s=3600) for i in range(max(counts))
            ]
            # One answer lasts about max_tokens / token_rate: spreading starts over that keeps N chats in
            # flight at any moment.
            stagger = max_tokens / token_rate if token_rate else 0.0
            results: dict[str, Any] = {}
            for n in counts:
                await pipeline_ttft(info["websocket"], tokens, min(n, 5), 1, 0.0, max_tokens)  # warm-up
                direct, df = await direct_ttft(info["model"], n, chats_per_user, stagger, max_tokens)
                piped, pf = await pipeline_ttft(
                    info["websocket"], tokens, n, chats_per_user, stagger, max_tokens
                )
                failures = {"direct": df, "pipeline": pf}
                ds, ps = summary(direct), summary(piped)
                added = {k: round(ps[k] - ds[k], 2) for k in ("p50", "p95", "p99")}
                results[str(n)] = {
                    "direct_ms": ds,
                    "pipeline_ms": ps,
                    "added_ms": added,
                    "failures": failures,
                }
                click.echo(
                    f"{n:>4} chats  direct p50/p95/p99 {ds['p50']:7.1f} {ds['p95']:7.1f} {ds['p99']:7.1f} ms"
                    f" | pipeline {ps['p50']:7.1f} {ps['p95']:7.1f} {ps['p99']:7.1f} ms"
                    f" | added {added['p50']:7.1f} {added['p95']:7.1f} {added['p99']:7.1f} ms"
                    f" | failures {failures}"
                )
            return results
        finally:
            proc.terminate()
            proc.wait(30)

    results = asyncio.run(main())
    report = {
        "benchmark": "overhead",
        "command": "chatstack bench overhead " + " ".join(sys.argv[3:]),
        "method": "closed loop: N users each asking --chats times in a row, starts spread over one answer's"
        " duration; time to first token measured at the client; direct = the model server alone",
        "token_rate": token_rate,
        "lambda_processes": lambda_processes,
        "max_tokens": max_tokens,
        "chats_per_user": chats_per_user,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "levels": results,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    click.echo(f"wrote {out}")
