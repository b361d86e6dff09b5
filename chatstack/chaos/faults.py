"""The faults: each signals real processes of the service (or its clients) mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from chatstack.chaos.chats import Chat
from chatstack.chaos.service import ServiceDir

STALL_S = 20.0  # how long the `*-stall` faults freeze their process


@dataclass
class Injected:
    hit: list[str]
    # Runs beside the chats (the stall's wake-up, the restart's watch); cancelled when the run ends.
    background: asyncio.Task[None] | None = None
    notes: list[str] = field(default_factory=list)  # what it found out, for the report


Inject = Callable[["Run"], Awaitable[Injected]]


@dataclass(frozen=True)
class Fault:
    name: str
    summary: str
    inject: Inject
    connections_close: bool = False  # the gateway dies with it: a closed connection is the client's end
    errors_allowed: bool = True  # False where nothing really failed: every chat must end `done`
    twins: bool = False  # each chat sends its sendMessage on two connections at once
    drop: bool = False  # each chat reconnects and resumes after the fault


@dataclass
class Run:
    service: ServiceDir
    fault: Fault
    chats: list[Chat]


async def _kill_workers(run: Run) -> Injected:
    names = run.service.worker_hosts() or [n for n in run.service.children() if n.startswith("lambda-")]
    return Injected([run.service.kill(name) for name in names])


async def _kill(name: str, run: Run) -> Injected:
    return Injected([run.service.kill(name)])


async def _kill_everything(run: Run) -> Injected:
    hit = run.service.kill_everything()
    killed_at = time.monotonic()
    proc = run.service.launch()  # the outer supervisor's part: start it again on the same data directory
    injected = Injected([*hit, "restarted `chatstack up` on the same data directory"])

    async def watch() -> None:  # how much of the time to heal is the start-up itself
        while run.service.info().get("pid") != proc.pid and proc.poll() is None:
            await asyncio.sleep(0.2)
        ready = "exited" if proc.poll() is not None else "wrote runtime.json"
        injected.notes.append(
            f"the new `chatstack up` {ready} {time.monotonic() - killed_at:.1f} s after the kill"
        )

    injected.background = asyncio.create_task(watch())
    return injected


async def _drop_clients(run: Run) -> Injected:
    for chat in run.chats:
        transport = chat.follows[0].client.ws.transport
        transport.abort()  # a dropped network: no close frame
    return Injected([f"{len(run.chats)} client sockets"])


async def _nothing(run: Run) -> Injected:
    return Injected(["(each sendMessage sent on two connections at once)"])


def _stall(name: str) -> Inject:
    """SIGSTOP the child (PostgreSQL: with its backends) for STALL_S, then SIGCONT: alive, its
    connections open, answering nothing (a paused VM, a partition, a hung process)."""

    async def inject(run: Run) -> Injected:
        hit = run.service.kill(name, signal.SIGSTOP)

        async def wake() -> None:
            try:
                await asyncio.sleep(STALL_S)
            finally:
                with contextlib.suppress(ProcessLookupError, KeyError):
                    run.service.kill(name, signal.SIGCONT)

        return Injected([f"{hit} stopped for {STALL_S:.0f} s"], asyncio.create_task(wake()))

    return inject


def _kill_one(name: str) -> Inject:
    async def inject(run: Run) -> Injected:
        return await _kill(name, run)

    return inject


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        # The ones a healthy service survives without help come first: `--all` reuses one service.
        Fault(
            "client-drop",
            "drop every client's socket mid-stream, reconnect and resume",
            _drop_clients,
            errors_allowed=False,
            drop=True,
        ),
        Fault(
            "duplicate-send",
            "the same sendMessage on two connections at once",
            _nothing,
            errors_allowed=False,
            twins=True,
        ),
        Fault("model-stall", f"SIGSTOP the model server for {STALL_S:.0f} s, then SIGCONT", _stall("model")),
        Fault(
            "redis-stall", f"SIGSTOP the embedded Redis for {STALL_S:.0f} s, then SIGCONT", _stall("redis")
        ),
        Fault(
            "postgres-stall",
            f"SIGSTOP the embedded PostgreSQL and its backends for {STALL_S:.0f} s, then SIGCONT",
            _stall("postgres"),
        ),
        Fault("model-server", "kill -9 the model server", _kill_one("model")),
        Fault("lambda-host", "kill -9 the Lambda host(s) running the worker", _kill_workers),
        Fault("redis", "kill -9 the embedded Redis", _kill_one("redis")),
        Fault("postgres", "kill -9 the embedded PostgreSQL", _kill_one("postgres")),
        Fault(
            "whole-service",
            "kill -9 `chatstack up` and every child, then start it again on the same data dir",
            _kill_everything,
            connections_close=True,
        ),
    )
}
