"""`chatstack bench connections`: what a held WebSocket connection costs the local service, and whether
memory stays flat while they are held.

Starts `chatstack up` (on a fake model), opens `--connections` WebSockets as that many users (each
authorized and registered by the real `$connect` path), and reports:
- server memory per connection: the gateway process's RSS after opening them minus before, over N;
  and the Redis memory and keys the connection registry adds (INFO used_memory, DBSIZE);
- `--chats` answers streamed over held connections on top, with their errors;
- a soak of `--minutes` with every connection held (each pings once within API Gateway's 10-minute
  idle timeout; the pings follow one another at an even pace, as independent users' would, not in
  bursts): RSS sampled every `--sample-s`, and its growth from the start of the soak to the end.
The file-descriptor limit of this process (inherited by the service) is raised to fit N.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import platform
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import click

from chatstack.bench.overhead import fake_model, redis_socket, service, summary
from chatstack.local.process import usable_cores

KIB = 1024
PING_EVERY_S = 480.0


def raise_fd_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise click.ClickException(
            f"{needed} connections need {needed} open files but the hard limit is {hard}; raise it "
            "(ulimit -Hn, or LimitNOFILE) and run again."
        )
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


def redis_figures(socket_path: str) -> dict[str, int]:
    import redis

    client = redis.Redis(unix_socket_path=socket_path)
    try:
        info = client.info("memory")
        return {"used_memory": int(info["used_memory"]), "keys": int(client.dbsize())}
    finally:
        client.close()


async def open_all(url: str, tokens: list[str], concurrency: int) -> tuple[list[Any], int, float]:
    from websockets.asyncio.client import connect

    gate = asyncio.Semaphore(concurrency)
    failures = 0

    async def one(token: str) -> Any:
        nonlocal failures
        async with gate:
            try:
                # No client pings: browsers send none, and API Gateway counts only messages as activity.
                return await connect(
                    f"{url}?token={token}", open_timeout=120, max_queue=4, ping_interval=None
                )
            except Exception:
                failures += 1
                return None

    started = time.perf_counter()
    sockets = await asyncio.gather(*(one(t) for t in tokens))
    return [s for s in sockets if s is not None], failures, time.perf_counter() - started


async def chat(ws: Any, max_tokens: int) -> float | None:
    """One answer over a held connection; its time to first delta, None on an error frame."""
    request_id = str(uuid.uuid4())
    body = {"action": "sendMessage", "requestId": request_id, "text": "How do held connections cost?"}
    started = time.perf_counter()
    await ws.send(json.dumps({**body, "options": {"maxTokens": max_tokens, "rag": False}}))
    first: float | None = None
    async with asyncio.timeout(120):
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("requestId") not in (None, request_id):
                continue
            if frame["type"] == "delta" and first is None:
                first = time.perf_counter() - started
            if frame["type"] == "error":
                return None
            if frame["type"] == "done":
                return first


async def ping(ws: Any) -> str | None:
    """Ping over one connection; None when the pong came, else what went wrong."""
    try:
        await ws.send('{"action":"ping"}')
        async with asyncio.timeout(60):
            while json.loads(await ws.recv()).get("type") != "pong":
                pass
        return None
    except Exception as exc:
        return type(exc).__name__


async def ping_steadily(
    sockets: list[Any], every_s: float, failures: dict[str, int], stop: asyncio.Event
) -> int:
    """Pings every connection once per `every_s`, one connection after another at an even pace, until
    `stop` is set; counts what went wrong in `failures` and answers how many pings it sent."""
    tasks: set[asyncio.Task[str | None]] = set()

    def done(task: asyncio.Task[str | None]) -> None:
        tasks.discard(task)
        error = task.result() if not task.cancelled() else "Cancelled"
        if error is not None:
            failures[error] = failures.get(error, 0) + 1

    interval, sent, started = every_s / len(sockets), 0, time.monotonic()
    while not stop.is_set():
        task = asyncio.create_task(ping(sockets[sent % len(sockets)]))
        tasks.add(task)
        task.add_done_callback(done)
        sent += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, started + sent * interval - time.monotonic()))
    if tasks:  # the pings in flight get their 60 s to answer
        await asyncio.wait(list(tasks))
    return sent


def first_message_bytes(samples: list[tuple[float, int]], held: int, sample_s: float) -> float | None:
    """What each connection's first message left in the gateway: the RSS change from the soak's start
    to the first sample taken after every connection had pinged once (they ping in turn over
    PING_EVERY_S, so that sample comes one interval after it; a ping is answered in milliseconds),
    over the connections held. None when the soak ended before that (shorter than PING_EVERY_S)."""
    after = next((rss for elapsed, rss in samples if elapsed >= PING_EVERY_S + sample_s), None)
    if after is None or not held:
        return None
    return round((after - samples[0][1]) / held, 1)


async def measure(
    info: dict[str, Any],
    data_dir: Path,
    n: int,
    chats: int,
    minutes: float,
    sample_s: float,
    concurrency: int,
) -> dict[str, Any]:
    from chatstack.local.identity import DevIdentity

    pid = int(info["pid"])
    url = info["websocket"]
    rsock = redis_socket(data_dir)
    if rsock is None:
        raise click.ClickException("The embedded Redis's socket was not found.")
    identity = DevIdentity(data_dir / "identity")
    tokens = [identity.mint(user=f"conn-{i}", tenant="bench", ttl_s=24 * 3600) for i in range(n)]
    # Warm up every code path (authorizer, $connect, a chat, $disconnect) so that what is measured
    # next is what connections hold, not modules and pools loaded on first use.
    warm, _, _ = await open_all(url, tokens[:20], 20)
    await chat(warm[0], 16)
    await asyncio.gather(*(ws.close() for ws in warm))
    await asyncio.sleep(3)
    rss_before, redis_before = rss_bytes(pid), redis_figures(rsock)

    sockets, failed, open_s = await open_all(url, tokens, concurrency)
    gc.collect()
    await asyncio.sleep(5)
    rss_open, redis_open = rss_bytes(pid), redis_figures(rsock)
    held = len(sockets)
    click.echo(
        f"opened {held} of {n} in {open_s:.1f} s ({failed} failed); gateway RSS "
        f"{rss_before / 2**20:.1f} -> {rss_open / 2**20:.1f} MiB = "
        f"{(rss_open - rss_before) / max(held, 1) / KIB:.1f} KiB per connection; Redis "
        f"{(redis_open['used_memory'] - redis_before['used_memory']) / max(held, 1):.0f} bytes and "
        f"{(redis_open['keys'] - redis_before['keys']) / max(held, 1):.2f} keys per connection"
    )

    chat_results: list[float | None] = []
    if chats and sockets:
        step = max(1, held // chats)
        chosen = sockets[::step][:chats]
        chat_results = list(await asyncio.gather(*(chat(ws, 32) for ws in chosen), return_exceptions=False))
        click.echo(f"{len(chosen)} chats on top: {sum(r is None for r in chat_results)} errors")

    samples: list[tuple[float, int]] = []
    ping_failures: dict[str, int] = {}
    soak_start = time.monotonic()
    # Each connection pings once every PING_EVERY_S: within the 10-minute idle timeout, counted from
    # its opening (which may have taken minutes).
    stop = asyncio.Event()
    pinger = asyncio.create_task(ping_steadily(sockets, PING_EVERY_S, ping_failures, stop)) if held else None
    while (elapsed := time.monotonic() - soak_start) < minutes * 60 or not samples:
        samples.append((round(elapsed, 1), rss_bytes(pid)))
        await asyncio.sleep(max(0.0, sample_s - (time.monotonic() - soak_start - elapsed)))
    pinged = 0
    if pinger is not None:
        stop.set()
        pinged = await pinger
    samples.append((round(time.monotonic() - soak_start, 1), rss_bytes(pid)))
    still_open = sum(1 for ws in sockets if ws.state.name == "OPEN")
    rss_end = samples[-1][1]
    growth = (rss_end - samples[0][1]) / samples[0][1]
    click.echo(
        f"soak {minutes:g} min: RSS {samples[0][1] / 2**20:.1f} -> {rss_end / 2**20:.1f} MiB "
        f"({growth:+.2%}); {still_open} of {held} still open; {pinged} pings, failed: "
        f"{ping_failures or 'none'}"
    )
    first_message = first_message_bytes(samples, held, sample_s)
    if first_message is not None:
        click.echo(
            f"each connection's first message left {first_message:.0f} bytes in the gateway (RSS once "
            f"every connection had pinged once, minus at the soak's start, over {held})"
        )
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    ttfts = [r for r in chat_results if r is not None]
    return {
        "connections": {"asked": n, "held": held, "failed": failed, "open_s": round(open_s, 1)},
        "gateway_rss_bytes": {"before": rss_before, "open": rss_open, "end": rss_end},
        "gateway_kib_per_connection": round((rss_open - rss_before) / max(held, 1) / KIB, 2),
        "redis": {"before": redis_before, "open": redis_open},
        "redis_bytes_per_connection": round(
            (redis_open["used_memory"] - redis_before["used_memory"]) / max(held, 1), 1
        ),
        "redis_keys_per_connection": round((redis_open["keys"] - redis_before["keys"]) / max(held, 1), 3),
        "chats": {
            "sent": len(chat_results),
            "errors": sum(r is None for r in chat_results),
            "ttft_ms": summary(ttfts),
        },
        "soak": {
            "minutes": minutes,
            "rss_growth": round(growth, 4),
            "still_open": still_open,
            "pings": pinged,
            "ping_failures": ping_failures,
            "first_message_bytes_per_connection": first_message,
            "samples": samples,
        },
    }


@click.command()
@click.option("--connections", "n", default=1000, show_default=True, help="WebSockets to open and hold.")
@click.option("--minutes", default=1.0, show_default=True, help="How long to hold them (the soak).")
@click.option("--chats", default=150, show_default=True, help="Answers streamed over held connections.")
@click.option("--sample-s", default=10.0, show_default=True, help="RSS sampling interval of the soak.")
@click.option("--open-concurrency", default=64, show_default=True, help="Handshakes in flight at once.")
@click.option(
    "--lambda-processes", default=2, show_default=True, help="Lambda host processes of `chatstack up`."
)
@click.option("--out", default=".bench/connections.json", show_default=True, type=click.Path(dir_okay=False))
def connections(
    n: int,
    minutes: float,
    chats: int,
    sample_s: float,
    open_concurrency: int,
    lambda_processes: int,
    out: str,
) -> None:
    """Server memory per held connection (gateway RSS, Redis) and RSS growth over a soak."""
    if n < 1 or minutes < 0 or sample_s <= 0 or open_concurrency < 1:
        raise click.ClickException("--connections and --open-concurrency must be positive, --minutes >= 0.")
    limit = raise_fd_limit(n + 1024)
    data_dir = Path(tempfile.mkdtemp(prefix="chatstack-bench-conn-"))
    with fake_model(20.0, 10.0) as model_url, service(data_dir, model_url, 0.0, lambda_processes) as info:
        results = asyncio.run(measure(info, data_dir, n, chats, minutes, sample_s, open_concurrency))
    report = {
        "benchmark": "connections",
        "command": "chatstack bench connections " + " ".join(sys.argv[3:]),
        "fd_limit": limit,
        "machine": {
            "cpus": usable_cores(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        **results,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    click.echo(f"wrote {out}")
