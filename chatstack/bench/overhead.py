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
    return {"n": len(ms), "p50": round(percentile(ms, 50), 2), "p95": round(percentile(ms, 95), 2),
            "p99": round(percentile(ms, 99), 2), "mean": round(statistics.fmean(ms), 2) if ms else float("nan")}


async def direct_ttft(model_url: str, n: int, max_tokens: int) -> tuple[list[float], int]:
    body = {"messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": QUESTION}],
            "max_tokens": max_tokens, "stream": True}
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def one() -> float | None:
            started = time.perf_counter()
            async with client.stream("POST", f"{model_url}/invocations", json=body) as r:
                first: float | None = None
                async for line in r.aiter_lines():
                    if first is None and '"content"' in line:
                        first = time.perf_counter() - started
                return first

        results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    ok = [r for r in results if isinstance(r, float)]
    return ok, n - len(ok)


async def pipeline_ttft(ws_url: str, token: str, n: int, max_tokens: int) -> tuple[list[float], int]:
    clients = await asyncio.gather(*(ChatClient.connect(ws_url, token=token, open_timeout=120) for _ in range(n)))
    try:
        replies = await asyncio.gather(*(c.send(QUESTION, options={"maxTokens": max_tokens, "rag": False})
                                         for c in clients))
        results = await asyncio.gather(*(r.text(timeout=300) for r in replies), return_exceptions=True)
        ttfts = [r.ttft_s for r, res in zip(replies, results, strict=True)
                 if isinstance(res, str) and r.ttft_s is not None]
        return ttfts, n - len(ttfts)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


@click.command()
@click.option("--concurrency", "levels", default="1,50,500", show_default=True,
              help="Comma-separated numbers of simultaneous chats.")
@click.option("--token-rate", default=20.0, show_default=True, help="Tokens/s per stream of the model server.")
@click.option("--max-tokens", default=16, show_default=True, help="Answer length per chat.")
@click.option("--rounds", default=3, show_default=True, help="Repetitions per level (samples add up).")
@click.option("--out", default=".bench/overhead.json", show_default=True, type=click.Path(dir_okay=False))
def overhead(levels: str, token_rate: float, max_tokens: int, rounds: int, out: str) -> None:
    """Time to first token through the whole local pipeline versus the model server alone."""
    from chatstack.local.identity import DevIdentity

    counts = [int(x) for x in levels.split(",") if x.strip()]
    if not counts or min(counts) < 1:
        raise click.BadParameter("give positive integers, e.g. 1,50,500", param_hint="--concurrency")
    data_dir = Path(tempfile.mkdtemp(prefix="chatstack-bench-"))

    async def main() -> dict[str, Any]:
        import subprocess

        proc = subprocess.Popen(
            [sys.executable, "-m", "chatstack.cli", "up", "--port", "0", "--data-dir", str(data_dir),
             "--token-rate", str(token_rate)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
            token = DevIdentity(data_dir / "identity").mint(user="bench", tenant="bench", ttl_s=3600)
            results: dict[str, Any] = {}
            for n in counts:
                direct: list[float] = []
                piped: list[float] = []
                failures = {"direct": 0, "pipeline": 0}
                for _ in range(rounds):
                    d, df = await direct_ttft(info["model"], n, max_tokens)
                    p, pf = await pipeline_ttft(info["websocket"], token, n, max_tokens)
                    direct += d
                    piped += p
                    failures["direct"] += df
                    failures["pipeline"] += pf
                ds, ps = summary(direct), summary(piped)
                added = {k: round(ps[k] - ds[k], 2) for k in ("p50", "p95", "p99")}
                results[str(n)] = {"direct_ms": ds, "pipeline_ms": ps, "added_ms": added, "failures": failures}
                click.echo(f"{n:>4} chats  direct p50/p95/p99 {ds['p50']:7.1f} {ds['p95']:7.1f} {ds['p99']:7.1f} ms"
                           f" | pipeline {ps['p50']:7.1f} {ps['p95']:7.1f} {ps['p99']:7.1f} ms"
                           f" | added {added['p50']:7.1f} {added['p95']:7.1f} {added['p99']:7.1f} ms"
                           f" | failures {failures}")
            return results
        finally:
            proc.terminate()
            proc.wait(30)

    results = asyncio.run(main())
    report = {
        "benchmark": "overhead",
        "command": "chatstack bench overhead " + " ".join(sys.argv[3:]),
        "token_rate": token_rate, "max_tokens": max_tokens, "rounds": rounds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "levels": results,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    click.echo(f"wrote {out}")
