"""`chatstack bench overhead`: what the pipeline adds to time to first token, and what it costs in
throughput and @connections posts.

For each concurrency level N and each arrival pattern, N users each ask `--chats` times in a row (a
closed loop) (a) straight against the model server's `/invocations`, and (b) through the whole local
service: WebSocket -> authorizer-checked connection -> sendMessage handler (PostgreSQL, Redis, SQS
stand-in) -> worker -> model server -> @connections -> client. Arrivals are either a burst (all N
start at once) or spread (starts spread over one answer's duration, as in steady state).

The model is a fake LMI server (`chatstack/bench/fake_model.py`: `--ttft-ms` to the first token, then
a token every `--token-ms`), the extractive backend at `--token-rate`, or any LMI-compatible server
(`--model-url`); direct and pipeline calls use the same one in the same run. Reported per level and
pattern: TTFT p50/p95/p99 of both and their difference, chats/s of both and their ratio, and the
deltas the pipeline posted per stream-second and per 1,000 output tokens, the CPU each process spent
per chat, and the Redis round trips and commands per chat (the embedded Redis's own counters).
Connections are opened before the clock starts, as a chat app keeps its socket open. `--cores N` runs
all of it on N cores, to see how the figures scale with them.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx

from chatstack.client import ChatClient
from chatstack.local.process import die_with_parent, usable_cores

QUESTION = "Latency budgets matter for chat. What matters for chat?"
ARRIVALS = ("burst", "spread")


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


@dataclass(frozen=True, slots=True)
class Chat:
    """One answer as the client saw it."""

    ttft_s: float
    deltas: int  # frames carrying text (one @connections post each); 0 for direct calls
    tokens: int
    stream_s: float  # first text to the end of the answer


@dataclass
class Run:
    chats: list[Chat] = field(default_factory=list)
    failures: int = 0
    wall_s: float = 0.0

    def figures(self) -> dict[str, Any]:
        stream_s = sum(c.stream_s for c in self.chats)
        tokens = sum(c.tokens for c in self.chats)
        deltas = sum(c.deltas for c in self.chats)
        return {
            "ttft_ms": summary([c.ttft_s for c in self.chats]),
            "chats": len(self.chats),
            "failures": self.failures,
            "chats_per_s": round(len(self.chats) / self.wall_s, 2) if self.wall_s else 0.0,
            "posts_per_stream_s": round(deltas / stream_s, 2) if stream_s and deltas else None,
            "posts_per_1k_tokens": round(deltas * 1000 / tokens, 1) if tokens and deltas else None,
        }


async def closed_loop(
    n: int, chats_per_user: int, stagger_s: float, chat: Callable[[int], Awaitable[Chat | None]]
) -> Run:
    """N users, each asking `chats_per_user` times in a row (a closed loop, like a load tool's virtual
    users); starts are spread over `stagger_s` (0: a burst, all N at once)."""
    run = Run()

    async def user(i: int) -> None:
        await asyncio.sleep(stagger_s * i / n)
        for _ in range(chats_per_user):
            try:
                result = await chat(i)
            except Exception:  # a failed chat is counted, not fatal: the report shows failures
                result = None
            if result is None:
                run.failures += 1
            else:
                run.chats.append(result)

    started = time.perf_counter()
    await asyncio.gather(*(user(i) for i in range(n)))
    run.wall_s = time.perf_counter() - started
    return run


async def direct(model_url: str, n: int, chats: int, stagger_s: float, max_tokens: int) -> Run:
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

        async def one(_: int) -> Chat | None:
            started = time.perf_counter()
            first: float | None = None
            tokens = 0
            async with client.stream("POST", f"{model_url}/invocations", json=body) as r:
                async for line in r.aiter_lines():
                    if '"content"' in line:
                        tokens += 1
                        first = first or time.perf_counter()
            if first is None:
                return None
            return Chat(first - started, 0, tokens, time.perf_counter() - first)

        return await closed_loop(n, chats, stagger_s, one)


async def pipeline(
    ws_url: str, tokens: list[str], n: int, chats: int, stagger_s: float, max_tokens: int
) -> Run:
    clients = await asyncio.gather(
        *(ChatClient.connect(ws_url, token=tokens[i], open_timeout=120) for i in range(n))
    )
    try:

        async def one(i: int) -> Chat | None:
            reply = await clients[i].send(QUESTION, options={"maxTokens": max_tokens, "rag": False})
            deltas = 0
            async with asyncio.timeout(300):
                async for _ in reply:
                    deltas += 1
            ended = time.perf_counter()
            if reply.ttft_s is None or reply.first_delta_at is None or reply.done is None:
                return None
            return Chat(reply.ttft_s, deltas, reply.done.usage.output_tokens, ended - reply.first_delta_at)

        return await closed_loop(n, chats, stagger_s, one)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


@dataclass(frozen=True, slots=True)
class Floor:
    """What a burst of N chats costs before each chat's first token, measured with nothing else running.

    `own_ms`: each chat's time to first token less the model's, when the model holds every first token
    long enough that all N chats have done their work up to the model before any token comes back:
    what the pipeline adds to one pure burst with no answers streaming at the same time, as the
    pipeline schedules it now (all chats advancing together; another order could serve the median
    chat sooner, within the CPU estimate below).

    `cpu_ms_per_chat`: the CPU every chat costs before its first token reaches the client, per process
    group. On C cores the median chat's first token needs ceil(N/2) chats' worth of it first, so
    `cpu_bound_ms` = ceil(N/2) * total / C + the model's time to first token. An estimate, not a
    strict bound: CPU per chat is lower when chats arrive staggered (fewer threads contend) and comes
    in ticks of 10 ms per process, from which the processes' idle CPU is taken off."""

    own_ms: list[float]
    cpu_ms_per_chat: dict[str, float]  # per process group, and "total"
    cpu_bound_ms: float
    window_ok: bool  # every chat reached the model in the first window, and no token left too early

    @staticmethod
    def bound_ms(chats: int, cpu_ms: float, cores: int, model_ttft_ms: float) -> float:
        return -(-chats // 2) * cpu_ms / max(cores, 1) + model_ttft_ms


async def burst_floor(
    ws_url: str,
    tokens: list[str],
    model_url: str,
    groups: dict[str, list[int]],
    *,
    cores: int,
    model_ttft_ms: float,
    model_token_ms: float,
) -> Floor:
    """A burst of len(tokens) chats with the fake model holding its tokens (see Floor); the model's
    timing is changed for the measurement and back.

    The model's first token comes `hold` after each request, the next `hold` later. So the work of
    every chat up to the model (gateway, sendMessage, PostgreSQL, Redis, the queue, the worker up to
    its model request) falls in a first window that ends just before the first tokens are due, and the
    first token's way out (the worker's read, the publish, the post, the gateway, the client) in a
    second one that ends when the last client has its first token, before any second token. What the
    processes spend idle (polls, timers), measured just before, is taken off both."""
    n = len(tokens)
    hold_s = max(1.5, 0.03 * n)  # acks for 50 chats take about 0.4 s on two cores
    clients = await asyncio.gather(*(ChatClient.connect(ws_url, token=t, open_timeout=120) for t in tokens))
    async with httpx.AsyncClient(timeout=30) as http:

        async def requests_taken(**timing: float) -> int:
            """The requests the model has taken so far; with `timing` (ttft_ms, token_ms), set it first."""
            url = f"{model_url}/timing"
            answer = await (http.put(url, json=timing) if timing else http.get(url))
            answer.raise_for_status()
            return int(answer.json()["requests"])

        taken_before = await requests_taken(ttft_ms=hold_s * 1000, token_ms=hold_s * 1000)
        try:
            await asyncio.sleep(0.5)  # what the last run left (stored answers, usage) settles
            idle = CpuMeter(groups, tree=frozenset({"postgres"}))
            idle.start()
            await asyncio.sleep(2.0)
            idle_per_s = {k: v / 2.0 for k, v in idle.seconds().items()}
            meter = CpuMeter(groups, tree=frozenset({"postgres"}))
            meter.start()
            started = time.perf_counter()
            replies = await asyncio.gather(
                *(c.send(QUESTION, options={"maxTokens": 2, "rag": False}) for c in clients)
            )
            await asyncio.sleep(max(0.0, hold_s - 0.1 - (time.perf_counter() - started)))
            first_window = time.perf_counter() - started
            to_model = meter.seconds()
            all_at_model = await requests_taken() - taken_before == n
            early = any(r.first_delta_at is not None for r in replies)
            meter.start()
            second_started = time.perf_counter()

            async def first_delta(reply: Any) -> None:
                async for _ in reply:
                    return

            async with asyncio.timeout(hold_s + 30):
                await asyncio.gather(*(first_delta(r) for r in replies))
            second_window = time.perf_counter() - second_started
            first_out = meter.seconds()
            late = time.perf_counter() - started > 2 * hold_s  # second tokens may have started
            async with asyncio.timeout(2 * hold_s + 60):
                for reply in replies:
                    async for _ in reply:
                        pass
        finally:
            await requests_taken(ttft_ms=model_ttft_ms, token_ms=model_token_ms)
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    idle_s = first_window + second_window
    per_chat = {
        name: round((to_model[name] + first_out[name] - idle_per_s.get(name, 0.0) * idle_s) * 1000 / n, 2)
        for name in to_model
    }
    per_chat["total"] = round(sum(per_chat.values()), 2)
    return Floor(
        own_ms=[(r.ttft_s - hold_s) * 1000 for r in replies if r.ttft_s is not None],
        cpu_ms_per_chat=per_chat,
        cpu_bound_ms=round(Floor.bound_ms(n, per_chat["total"], cores, model_ttft_ms), 1),
        window_ok=all_at_model and not early and not late,
    )


class ServerUrl(str):
    """A server's URL that also names its process (for the CPU figures)."""

    pid: int | None = None


class CpuMeter:
    """CPU time (user + system) that groups of processes spend between `start` and `stop`. A group is
    a list of pids; with `tree`, their children count too (PostgreSQL's backends)."""

    def __init__(self, groups: dict[str, list[int]], tree: frozenset[str] = frozenset()) -> None:
        self.groups = {name: pids for name, pids in groups.items() if pids}
        self.tree = tree
        self._start: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        import psutil

        spent: dict[str, float] = {}
        for name, pids in self.groups.items():
            total = 0.0
            for pid in pids:
                try:
                    proc = psutil.Process(pid)
                    procs = [proc, *proc.children(recursive=True)] if name in self.tree else [proc]
                    for p in procs:
                        times = p.cpu_times()
                        total += times.user + times.system
                except psutil.Error:  # a process that ended took its figures with it
                    continue
            spent[name] = total
        return spent

    def start(self) -> None:
        self._start = self._read()

    def seconds(self) -> dict[str, float]:
        """CPU seconds per group since `start`."""
        end = self._read()
        return {n: end[n] - self._start.get(n, 0.0) for n in end}

    def per_chat_ms(self, chats: int) -> dict[str, float]:
        """Milliseconds of CPU per answered chat since `start`, per group, and their total."""
        figures = {n: round(spent * 1000 / max(chats, 1), 2) for n, spent in self.seconds().items()}
        figures["total"] = round(sum(figures.values()), 2)
        return figures


def pin_to_cores(n: int) -> set[int]:
    """Restrict this process, and so every process it starts from now on, to the first `n` cores it
    may use (Linux's CPU affinity); the cores chosen. One sentence when that cannot be done."""
    if not hasattr(os, "sched_setaffinity"):
        raise click.ClickException("--cores needs Linux's CPU affinity, which this platform lacks.")
    allowed = sorted(os.sched_getaffinity(0))
    if not 1 <= n <= len(allowed):
        raise click.ClickException(
            f"--cores must be between 1 and {len(allowed)}, the cores this process may use."
        )
    chosen = set(allowed[:n])
    os.sched_setaffinity(0, chosen)
    return chosen


def lambda_hosts(asked: int | None) -> int:
    """The Lambda host processes a run starts: as asked, else one per core this process may use, at
    least two. Each host runs Python code on about one core at a time, so a run on more cores needs
    more hosts to use them."""
    return asked if asked is not None else max(2, usable_cores())


def redis_socket(data_dir: Path) -> str | None:
    """The Unix socket of the embedded Redis `chatstack up` started in `data_dir`; None without one."""
    from chatstack.local.embedded import redis_socket_path

    socket_path = redis_socket_path(data_dir / "redis")
    return str(socket_path) if socket_path.exists() else None


class RedisCounter:
    """Round trips and commands the Redis server handled between `start` and `per_chat`, from its own
    counters (INFO stats): `total_reads_processed` counts the requests it read off client sockets,
    one per round trip (a pipeline arrives as one), `total_commands_processed` the commands in them.
    Whatever else talks to Redis meanwhile counts too; the counter's own INFO calls do not."""

    FIELDS = {"round_trips": "total_reads_processed", "commands": "total_commands_processed"}

    def __init__(self, socket_path: str) -> None:
        import redis

        self.client = redis.Redis(unix_socket_path=socket_path, socket_timeout=10)
        self._start: dict[str, int] = {}

    def _read(self) -> dict[str, int]:
        stats = self.client.info("stats")
        return {name: int(stats[key]) for name, key in self.FIELDS.items()}

    def start(self) -> None:
        self._start = self._read()

    def per_chat(self, chats: int) -> dict[str, float]:
        end = self._read()
        # The INFO that read `end` is one round trip and one command, counted before it answered.
        return {
            name: round((end[name] - self._start[name] - 1) / max(chats, 1), 1) for name in self.FIELDS
        }

    def close(self) -> None:
        self.client.close()


SERVICES = ("gateway", "lambda hosts", "postgres", "redis")


def services_per_model(cpu_ms_per_chat: dict[str, float]) -> float | None:
    """The service's CPU per chat as a multiple of the model server's. The fake model does the same
    work for every chat, so its CPU per chat says how fast the machine ran during the run; this ratio
    compares runs taken at different speeds (identical runs here differ by up to a quarter in CPU per
    chat). None when the model's CPU was not measured (an external `--model-url` on another host)."""
    model = cpu_ms_per_chat.get("model", 0.0)
    if model <= 0:
        return None
    return round(sum(cpu_ms_per_chat.get(name, 0.0) for name in SERVICES) / model, 2)


def service_processes(info: dict[str, Any], model: ServerUrl | str) -> dict[str, list[int]]:
    """The processes of the local service and its model, grouped as the report names them."""
    children = info.get("children", {})
    model_pid = getattr(model, "pid", None) or children.get("model")
    return {
        "gateway": [int(info["pid"])],
        "lambda hosts": [int(pid) for name, pid in children.items() if name.startswith("lambda-")],
        "postgres": [int(children["postgres"])] if "postgres" in children else [],
        "redis": [int(children["redis"])] if "redis" in children else [],
        "model": [int(model_pid)] if model_pid else [],
        "client": [os.getpid()],
    }


@contextmanager
def fake_model(ttft_ms: float, token_ms: float) -> Iterator[ServerUrl]:
    """A fake model server in its own process (its timing must not share the client's event loop)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatstack.bench.fake_model",
            "--ttft-ms",
            str(ttft_ms),
            "--token-ms",
            str(token_ms),
        ],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent(signal.SIGTERM),  # a killed benchmark leaves no server behind
    )
    try:
        from chatstack.bench.fake_model import READY

        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith(READY):
            raise click.ClickException("The fake model server did not start.")
        url = ServerUrl(line[len(READY) :].strip())
        url.pid = proc.pid
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def service(
    data_dir: Path, model_url: str, token_rate: float, lambda_processes: int, fixed_flush_ms: int = 0
) -> Iterator[dict[str, Any]]:
    """`chatstack up` in a subprocess on port 0; yields its runtime.json. `fixed_flush_ms` > 0 replaces
    the adaptive delta pacing with the old rule, one delta every that many ms (for comparisons)."""
    args = [sys.executable, "-m", "chatstack.cli", "up", "--port", "0", "--data-dir", str(data_dir)]
    args += ["--lambda-processes", str(lambda_processes)]
    args += ["--model-url", model_url] if model_url else ["--token-rate", str(token_rate)]
    pacing: dict[str, str] = {}
    if fixed_flush_ms > 0:
        args += ["--flush-ms", str(fixed_flush_ms)]
        pacing = {"CHATSTACK_FLUSH_MAX_INTERVAL_MS": str(fixed_flush_ms), "CHATSTACK_FLUSH_EARLY_SHARE": "1"}
    log = (data_dir / "up.log").open("w")  # kept with the data dir: why a run failed, if one did
    proc = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        # `up` stops its own children when it gets SIGTERM: a killed benchmark leaves nothing behind.
        preexec_fn=die_with_parent(signal.SIGTERM),
        # One benchmark client opens hundreds of connections from one IP as one user: the per-IP and
        # per-user limits would (rightly) refuse it.
        env={**os.environ, "CHATSTACK_LIMITS_ENABLED": "false", **pacing},
    )
    try:
        state = data_dir / "runtime.json"
        deadline = time.monotonic() + 180
        while not state.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise click.ClickException("chatstack up did not start; run it by hand to see why.")
            time.sleep(0.2)
        time.sleep(0.5)  # runtime.json is written in two steps; read the whole of it
        yield {**json.loads(state.read_text()), "process": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:  # thousands of sockets to close: do not leave it behind
            proc.kill()
            proc.wait(30)
        log.close()


def plot_ttft(results: dict[str, Any], path: Path, title: str) -> None:
    """TTFT p50 and p99 against concurrency, direct and through the pipeline, one panel per arrival."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrivals = [a for a in ARRIVALS if any(a in level for level in results.values())]
    fig, axes = plt.subplots(1, len(arrivals), figsize=(6 * len(arrivals), 4.2), squeeze=False)
    levels = sorted(results, key=int)
    for ax, arrival in zip(axes[0], arrivals, strict=True):
        xs = [int(n) for n in levels if arrival in results[n]]
        for who, color in (("direct", "tab:blue"), ("pipeline", "tab:red")):
            for q, style in (("p50", "-o"), ("p99", "--^")):
                ys = [results[str(n)][arrival][who]["ttft_ms"][q] for n in xs]
                ax.plot(xs, ys, style, color=color, label=f"{who} {q}")
        ax.set_xscale("log")
        ax.set_xlabel("concurrent chats")
        ax.set_ylabel("time to first token (ms)")
        ax.set_title(f"{arrival} arrivals")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command()
@click.option(
    "--concurrency", "levels", default="1,50,500", show_default=True, help="Comma-separated numbers of chats."
)
@click.option(
    "--arrivals",
    type=click.Choice([*ARRIVALS, "both"]),
    default="both",
    show_default=True,
    help="burst: all N start at once; spread: starts spread over one answer's duration.",
)
@click.option(
    "--model",
    "model_kind",
    type=click.Choice(["fake", "extractive"]),
    default="fake",
    show_default=True,
    help="fake: a server with fixed token timing (--ttft-ms, --token-ms); extractive: the local backend.",
)
@click.option("--model-url", default="", help="Any LMI-compatible server (/invocations) instead of --model.")
@click.option("--ttft-ms", default=20.0, show_default=True, help="Fake model: time to its first token.")
@click.option("--token-ms", default=10.0, show_default=True, help="Fake model: time between tokens.")
@click.option("--token-rate", default=20.0, show_default=True, help="Extractive model: tokens/s per stream.")
@click.option("--max-tokens", default=64, show_default=True, help="Answer length per chat.")
@click.option(
    "--chats", "chats_per_user", default=4, show_default=True, help="Chats each user asks in a row."
)
@click.option(
    "--lambda-processes",
    type=click.IntRange(1, 64),
    default=None,
    help="Lambda host processes of `chatstack up`. Default: one per core used, at least 2 (each host "
    "runs Python code on about one core at a time).",
)
@click.option(
    "--fixed-flush-ms",
    default=0,
    show_default=True,
    help="Replace the adaptive delta pacing with one delta every N ms (the old rule; 0: adaptive).",
)
@click.option(
    "--cores",
    type=int,
    default=None,
    help="Run everything (the service, the model, this client) on the first N of the cores this "
    "process may use; Linux. Default: all of them.",
)
@click.option(
    "--floor",
    is_flag=True,
    help="Also measure, at each burst level, the CPU each chat costs before its first token and the "
    "lowest TTFT p50 that allows on these cores (fake model only; about 3 s + 0.1 s per chat more).",
)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a PNG.")
@click.option("--out", default=".bench/overhead.json", show_default=True, type=click.Path(dir_okay=False))
def overhead(
    levels: str,
    arrivals: str,
    model_kind: str,
    model_url: str,
    ttft_ms: float,
    token_ms: float,
    token_rate: float,
    max_tokens: int,
    chats_per_user: int,
    lambda_processes: int | None,
    fixed_flush_ms: int,
    cores: int | None,
    floor: bool,
    plot: Path | None,
    out: str,
) -> None:
    """TTFT, throughput and posts through the whole local pipeline versus the model server alone."""
    from chatstack.local.identity import DevIdentity

    counts = [int(x) for x in levels.split(",") if x.strip()]
    if not counts or min(counts) < 1:
        raise click.BadParameter("give positive integers, e.g. 1,50,500", param_hint="--concurrency")
    if floor and (model_url or model_kind != "fake"):
        raise click.UsageError("--floor slows the fake model down for a while: it needs --model fake.")
    if cores is not None:
        pin_to_cores(cores)
    lambda_processes = lambda_hosts(lambda_processes)
    patterns = ARRIVALS if arrivals == "both" else (arrivals,)
    data_dir = Path(tempfile.mkdtemp(prefix="chatstack-bench-"))
    if model_url:
        model_label, answer_s = f"external {model_url}", 0.0
    elif model_kind == "fake":
        model_label = f"fake: {ttft_ms:g} ms to first token, then a token every {token_ms:g} ms"
        answer_s = (ttft_ms + max_tokens * token_ms) / 1000
    else:
        model_label, answer_s = f"extractive at {token_rate:g} tokens/s", max_tokens / token_rate

    async def measure(info: dict[str, Any]) -> dict[str, Any]:
        identity = DevIdentity(data_dir / "identity")
        tokens = [identity.mint(user=f"bench-{i}", tenant="bench", ttl_s=3600) for i in range(max(counts))]
        results: dict[str, Any] = {}
        socket_path = redis_socket(data_dir)
        redis_counter = RedisCounter(socket_path) if socket_path else None
        await pipeline(info["websocket"], tokens, min(max(counts), 5), 1, 0.0, max_tokens)  # warm-up
        for n in counts:
            results[str(n)] = {}
            for arrival in patterns:
                stagger = answer_s if arrival == "spread" else 0.0
                groups = service_processes(info, url)
                direct_meter = CpuMeter({k: groups[k] for k in ("model", "client")})
                direct_meter.start()
                direct_run = await direct(info["model"], n, chats_per_user, stagger, max_tokens)
                direct_cpu = direct_meter.per_chat_ms(len(direct_run.chats))
                d = {**direct_run.figures(), "cpu_ms_per_chat": direct_cpu}
                meter = CpuMeter(groups, tree=frozenset({"postgres"}))
                meter.start()
                if redis_counter is not None:
                    redis_counter.start()
                run = await pipeline(info["websocket"], tokens, n, chats_per_user, stagger, max_tokens)
                p = {**run.figures(), "cpu_ms_per_chat": meter.per_chat_ms(len(run.chats))}
                if redis_counter is not None:
                    p["redis_per_chat"] = redis_counter.per_chat(len(run.chats))
                p["services_per_model_cpu"] = services_per_model(p["cpu_ms_per_chat"])
                added = {k: round(p["ttft_ms"][k] - d["ttft_ms"][k], 2) for k in ("p50", "p95", "p99")}
                ratio = round(p["chats_per_s"] / d["chats_per_s"], 3) if d["chats_per_s"] else None
                results[str(n)][arrival] = {
                    "direct": d,
                    "pipeline": p,
                    "added_ttft_ms": added,
                    "throughput_ratio": ratio,
                }
                click.echo(
                    f"{n:>4} {arrival:<6} direct {d['chats_per_s']:6.1f} chats/s p50/p99 "
                    f"{d['ttft_ms']['p50']:6.1f} {d['ttft_ms']['p99']:6.1f} ms | pipeline "
                    f"{p['chats_per_s']:6.1f} chats/s ({ratio}) p50/p99 "
                    f"{p['ttft_ms']['p50']:6.1f} {p['ttft_ms']['p99']:6.1f} ms"
                    f" | added p50/p99 {added['p50']:6.1f} {added['p99']:6.1f} ms | posts/stream-s "
                    f"{p['posts_per_stream_s']} per 1k tokens {p['posts_per_1k_tokens']}"
                    f" | failures {d['failures']}/{p['failures']}"
                )
                cpu = p["cpu_ms_per_chat"]
                ratio_of_model = p["services_per_model_cpu"]
                click.echo(
                    "       CPU ms per chat, pipeline: "
                    + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
                    + (f" (services / model {ratio_of_model})" if ratio_of_model is not None else "")
                    + f" | direct: model {d['cpu_ms_per_chat'].get('model', 0):.1f}, client "
                    f"{d['cpu_ms_per_chat'].get('client', 0):.1f}"
                )
                if "redis_per_chat" in p:
                    click.echo(
                        f"       Redis per chat: {p['redis_per_chat']['round_trips']:g} round trips, "
                        f"{p['redis_per_chat']['commands']:g} commands"
                    )
                if floor and arrival == "burst":
                    used = usable_cores()
                    found = await burst_floor(
                        info["websocket"],
                        tokens[:n],
                        url,
                        groups,
                        cores=used,
                        model_ttft_ms=ttft_ms,
                        model_token_ms=token_ms,
                    )
                    own_p50 = percentile(found.own_ms, 50)
                    isolated = round(own_p50 + ttft_ms - d["ttft_ms"]["p50"], 1)
                    results[str(n)][arrival]["floor"] = {
                        "own_ms": summary([ms / 1000 for ms in found.own_ms]),
                        "added_p50_alone_ms": isolated,
                        "cpu_ms_before_first_token": found.cpu_ms_per_chat,
                        "cores": used,
                        "cpu_bound_p50_ms": found.cpu_bound_ms,
                        "window_ok": found.window_ok,
                    }
                    click.echo(
                        f"       one burst of {n}, the model holding its tokens: the pipeline's own time to "
                        f"first token p50 {own_p50:.0f} ms, so added p50 {isolated:+.0f} ms with nothing "
                        f"streaming (the closed loop above, whose later rounds arrive staggered: "
                        f"{added['p50']:+.0f})"
                        + ("" if found.window_ok else " | WINDOWS OVERLAPPED: these figures are not clean")
                    )
                    click.echo(
                        "       CPU ms per chat before its first token: "
                        + ", ".join(f"{k} {v:.1f}" for k, v in found.cpu_ms_per_chat.items())
                        + f" | ceil(N/2) chats of it on {used} cores + the model: p50 >= about "
                        f"{found.cpu_bound_ms:.0f} ms"
                    )
        if redis_counter is not None:
            redis_counter.close()
        return results

    with ExitStack() as stack:
        url = stack.enter_context(model_server(model_url, model_kind, ttft_ms, token_ms))
        info = stack.enter_context(service(data_dir, url, token_rate, lambda_processes, fixed_flush_ms))
        results = asyncio.run(measure(info))
    command = "chatstack bench overhead " + " ".join(sys.argv[3:])
    report = {
        "benchmark": "overhead",
        "command": command,
        "method": "closed loop: N users each asking --chats times in a row; burst = all N at once, spread ="
        " starts spread over one answer's duration; TTFT at the client; direct = the model server alone",
        "model": model_label,
        "lambda_processes": lambda_processes,
        "pacing": f"fixed {fixed_flush_ms} ms" if fixed_flush_ms else "adaptive (CHATSTACK_FLUSH_* settings)",
        "max_tokens": max_tokens,
        "chats_per_user": chats_per_user,
        "machine": {
            "cpus": usable_cores(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "levels": results,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    click.echo(f"wrote {out}")
    if plot is not None:
        plot_ttft(results, plot, f"{command}\n{model_label}, {usable_cores()} CPUs")
        click.echo(f"wrote {plot}")


@contextmanager
def model_server(model_url: str, kind: str, ttft_ms: float, token_ms: float) -> Iterator[str]:
    """The model URL both paths use: the given one, a fake server, or "" (chatstack up's own)."""
    if model_url or kind != "fake":
        yield model_url.rstrip("/")
        return
    with fake_model(ttft_ms, token_ms) as url:
        yield url
