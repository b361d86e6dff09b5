"""Fault injection against a running `chatstack up`: break one part mid-stream and record what clients see.

For one named fault: open N concurrent chats against the service of a data directory, wait until every
answer is streaming, inject the fault, then record for each requestId how its stream ended (`done`,
`error`, the connection closed, or nothing within 30 s), whether it reaches a stored answer afterwards
by `resume` or by re-sending the same sendMessage (what a client does, no manual step), whether anything
was stored twice, and how long the service took to answer a new chat. One fault gives one table row.

The promises checked are those of docs/protocol.md ("every failure ends in a frame", "one answer per
requestId") and issue 9 (a new chat succeeds within 30 s of a fault, with no manual step).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import websockets

from chatstack.client import ChatClient, Reply
from chatstack.local.identity import DevIdentity
from lambdas import protocol

SETTLE_S = 30.0  # every chat must end in a frame this long after the fault
HEAL_LIMIT_S = 30.0  # a new chat must succeed this long after the fault
OBSERVE_HEAL_S = 40.0  # how long the heal probe keeps trying, to report a figure past the limit
RECOVER_S = 30.0  # how long clients retry (resume, then the same sendMessage) after the service healed
STALL_S = 20.0  # how long `model-stall` freezes the model server
TENANT = "chaos"
# Three long sentences the extractive backend quotes back: ~85 tokens, a few seconds at --token-rate 20.
PROMPT = (
    "Chaos engineering breaks a running service on purpose to learn how the service heals itself after "
    "each fault. A healthy service answers every chat even while a fault breaks one of its processes and "
    "the service heals. Each fault in the chaos suite kills a process of the running service mid-stream "
    "and measures how long the service takes to heal. How does the service heal after a fault?"
)
PROBE = "The probe checks that a new chat succeeds. Does a new chat succeed?"
NETWORK_ERRORS = (OSError, TimeoutError, websockets.exceptions.WebSocketException, httpx.HTTPError)


# ---- the service under test ----------------------------------------------------------------------
class ServiceDir:
    """A `chatstack up` known by its data directory (runtime.json), with the pids of its children."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.identity = DevIdentity(data_dir / "identity")
        pid = self.pid()
        if pid is None:
            raise RuntimeError(f"No `chatstack up` is running on {data_dir}.")
        # How to start it again after `whole-service`: its own command line, directory and environment.
        up = psutil.Process(pid)
        self.cmdline: list[str] = up.cmdline()
        self.cwd: str = up.cwd()
        try:
            self.env: dict[str, str] = up.environ()
        except psutil.AccessDenied:
            self.env = dict(os.environ)
        self.restarts = 0

    def info(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.data_dir / "runtime.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    @property
    def websocket(self) -> str:
        return str(self.info().get("websocket", ""))

    @property
    def base(self) -> str:
        return str(self.info().get("base", ""))

    def token(self, user: str) -> str:
        return self.identity.mint(user=user, tenant=TENANT, scopes=("chat",), ttl_s=3600)

    def children(self) -> dict[str, int]:
        """Child name -> pid: runtime.json's `children` where they are alive, else found by looking."""
        info = self.info()
        found: dict[str, int] = {}
        with contextlib.suppress(psutil.Error, KeyError):
            hosts = 0
            for child in psutil.Process(info["pid"]).children():
                command = " ".join(child.cmdline())
                if "sagemaker_containers.server" in command:
                    found["model"] = child.pid
                elif "chatstack.local.lambda_host" in command:
                    found[f"lambda-{hosts}"] = child.pid
                    hosts += 1
        # The embedded servers daemonize (their parent is init): their pid files say who they are.
        with contextlib.suppress(OSError, ValueError):
            pid_line = (self.data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0]
            found["postgres"] = int(pid_line)
        with contextlib.suppress(OSError, ValueError, KeyError):
            settings = json.loads((self.data_dir / "redis" / "redis.db.settings").read_text())
            found["redis"] = int(Path(settings["pidfile"]).read_text().strip())
        for name, pid in (info.get("children") or {}).items():
            if _alive(pid):
                found[name] = int(pid)
        return {name: pid for name, pid in found.items() if _alive(pid)}

    def worker_hosts(self) -> list[str]:
        """The Lambda hosts streaming from the model server right now (they run the worker)."""
        port = urlsplit(str(self.info().get("model", ""))).port
        busy = []
        for name, pid in self.children().items():
            if not name.startswith("lambda-"):
                continue
            with contextlib.suppress(psutil.Error):
                if any(
                    c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
                    for c in psutil.Process(pid).net_connections("tcp")
                ):
                    busy.append(name)
        return busy

    def kill(self, name: str, sig: int = signal.SIGKILL) -> str:
        """Signal one child (PostgreSQL: the postmaster and its backends); answers what was hit."""
        return self._signal(name, self.children()[name], sig)

    def _signal(self, name: str, pid: int, sig: int) -> str:
        victims = [pid]
        if name == "postgres":
            with contextlib.suppress(psutil.Error):
                victims += [p.pid for p in psutil.Process(pid).children()]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, sig)
        return f"{name} (pid {pid})"

    def kill_everything(self) -> list[str]:
        """SIGKILL `up` first (so nothing restarts what follows), then every child it had."""
        hit = []
        children = self.children()
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            hit.append(f"up (pid {pid})")
        for name, child in children.items():
            hit.append(self._signal(name, child, signal.SIGKILL))
        return hit

    def launch(self) -> subprocess.Popen[bytes]:
        """Start `chatstack up` again with its first command line, on the same data directory."""
        self.restarts += 1
        log = open(self.data_dir.parent / f"{self.data_dir.name}-restart-{self.restarts}.log", "wb")  # noqa: SIM115
        return subprocess.Popen(
            self.cmdline,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def pid(self) -> int | None:
        """The pid of the running `up`, or None."""
        pid = self.info().get("pid")
        return pid if isinstance(pid, int) and _alive(pid) else None

    def healthy(self) -> bool:
        if self.pid() is None:
            return False
        try:
            return httpx.get(self.base + "/healthz", timeout=5).status_code == 200
        except NETWORK_ERRORS:
            return False

    async def restart(self, timeout_s: float = 120) -> None:
        """Kill whatever is left and start afresh on the same data directory; wait until it is healthy."""
        self.kill_everything()
        proc = self.launch()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"`chatstack up` exited with {proc.returncode} when restarted on {self.data_dir}."
                )
            if self.info().get("pid") == proc.pid and await asyncio.to_thread(self.healthy):
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(
            f"`chatstack up` on {self.data_dir} was not healthy {timeout_s:.0f} s after a restart."
        )

    def stop(self) -> None:
        """SIGTERM the running `up`, then SIGKILL whatever of its children outlived it."""
        pid = self.pid()
        children = self.children()
        if pid is not None:
            up = psutil.Process(pid)
            up.terminate()
            try:
                up.wait(30)
            except psutil.TimeoutExpired:
                up.kill()
        for child in children.values():
            with contextlib.suppress(psutil.Error):
                psutil.Process(child).kill()


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


# ---- one chat ------------------------------------------------------------------------------------
class TrackedReply(Reply):
    """A Reply that notes when its stream ended with a server frame."""

    def __init__(self, request_id: str) -> None:
        super().__init__(request_id)
        self.ended = asyncio.Event()
        self.streaming = asyncio.Event()
        self.ended_at: float | None = None

    def _delta(self, frame: protocol.Delta) -> None:
        super()._delta(frame)
        self.streaming.set()

    def _finish(self, frame: protocol.Done | protocol.Error) -> None:
        super()._finish(frame)
        if not self.ended.is_set():
            self.ended_at = time.monotonic()
            self.ended.set()

    def _reopen(self) -> None:
        super()._reopen()
        self.ended.clear()
        self.ended_at = None


@dataclass
class Follow:
    """One connection following one requestId."""

    client: ChatClient
    reply: TrackedReply

    @classmethod
    async def open(cls, service: ServiceDir, user: str, request_id: str) -> Follow:
        client = await ChatClient.connect(service.websocket, token=service.token(user), open_timeout=10)
        reply = TrackedReply(request_id)
        client.replies[request_id] = reply
        return cls(client, reply)

    async def end(self, timeout: float) -> tuple[str, float | None]:
        """How the stream ended: done, error, closed (no frame, the connection went) or hung."""
        ended = asyncio.ensure_future(self.reply.ended.wait())
        # The client's reader task ends when the connection closes (after the frames before it).
        reader = self.client._reader
        await asyncio.wait({ended, reader}, timeout=max(timeout, 0), return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        if self.reply.ended.is_set():
            return ("done" if self.reply.done else "error"), self.reply.ended_at
        if reader.done():
            return "closed", time.monotonic()
        return "hung", None

    async def close(self) -> None:
        with contextlib.suppress(*NETWORK_ERRORS):
            await asyncio.wait_for(self.client.close(), 5)


@dataclass
class Chat:
    index: int
    user: str
    request_id: str
    follows: list[Follow] = field(default_factory=list)
    conversation_id: str = ""
    outcome: str = ""  # done, error, closed, hung
    codes: list[str] = field(default_factory=list)
    ended_at: float | None = None
    answered_by: str = ""  # stream, resume, resend; empty: no answer reached
    final_error: str = ""  # no answer, but a re-send is answered with this error and no retryAfter
    streamed: list[str] = field(default_factory=list)  # whole answers as streamed from seq 1
    stored_users: int = 0
    stored_answers: int = 0
    stored_text: str = ""
    conversations: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    spent: list[Follow] = field(default_factory=list)  # connections a fault dropped


# ---- faults --------------------------------------------------------------------------------------
@dataclass
class Injected:
    hit: list[str]
    undo: asyncio.Task[None] | None = None


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
    # The fault itself failed the answers (the model died mid-answer): a requestId may keep its error as
    # its outcome (docs/protocol.md: regenerating takes a new requestId). Elsewhere it must be answered.
    final_errors: bool = False


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
    run.service.launch()  # the outer supervisor's part: start it again on the same data directory
    return Injected([*hit, "restarted `chatstack up` on the same data directory"])


async def _drop_clients(run: Run) -> Injected:
    for chat in run.chats:
        transport = chat.follows[0].client.ws.transport
        transport.abort()  # a dropped network: no close frame
    return Injected([f"{len(run.chats)} client sockets"])


async def _nothing(run: Run) -> Injected:
    return Injected(["(each sendMessage sent on two connections at once)"])


async def _stall_model(run: Run) -> Injected:
    hit = run.service.kill("model", signal.SIGSTOP)
    pid = run.service.children()["model"]

    async def wake() -> None:
        try:
            await asyncio.sleep(STALL_S)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    return Injected([f"{hit} stopped for {STALL_S:.0f} s"], asyncio.create_task(wake()))


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
        Fault("model-stall", f"SIGSTOP the model server for {STALL_S:.0f} s, then SIGCONT", _stall_model),
        Fault("model-server", "kill -9 the model server", _kill_one("model"), final_errors=True),
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


# ---- a run ---------------------------------------------------------------------------------------
@dataclass
class FaultResult:
    fault: Fault
    chats: list[Chat]
    streaming: int  # chats mid-stream when the fault hit
    hit: list[str]
    last_frame_s: float | None  # fault -> the last done/error (or close), None if any chat hung
    heal_s: float | None  # fault -> the first new chat that succeeded, None if none within OBSERVE_HEAL_S
    probe_failures: list[str] = field(default_factory=list)  # how the new chats before it failed

    def count(self, outcome: str) -> int:
        return sum(1 for c in self.chats if c.outcome == outcome)

    @property
    def answered(self) -> int:
        return sum(1 for c in self.chats if c.answered_by and c.stored_answers > 0)

    @property
    def failed(self) -> int:
        """No answer, but the client was told so for good: re-sending gets the same final error."""
        return sum(1 for c in self.chats if not (c.answered_by and c.stored_answers > 0) and c.final_error)

    @property
    def lost(self) -> int:
        return len(self.chats) - self.answered - self.failed

    @property
    def duplicated(self) -> int:
        return sum(
            1 for c in self.chats if c.stored_users > 1 or c.stored_answers > 1 or len(c.conversations) > 1
        )

    @property
    def mismatched(self) -> int:
        return sum(1 for c in self.chats if c.stored_text and any(t != c.stored_text for t in c.streamed))

    def problems(self) -> list[str]:
        """What broke a promise, one sentence each; empty when the fault was survived."""
        n, out = len(self.chats), []
        if self.count("hung"):
            out.append(
                f"{self.count('hung')} of {n} chats got neither done nor error within {SETTLE_S:.0f} s."
            )
        if self.count("closed") and not self.fault.connections_close:
            out.append(f"{self.count('closed')} of {n} connections closed without a done or error frame.")
        if self.count("error") and not self.fault.errors_allowed:
            codes = sorted({code for c in self.chats for code in c.codes})
            out.append(f"{self.count('error')} of {n} chats ended in error ({', '.join(codes)}).")
        if self.lost:
            out.append(f"{self.lost} of {n} requestIds reached no stored answer by resume or re-send.")
        if self.failed and not self.fault.final_errors:
            out.append(f"{self.failed} of {n} requestIds were given up with an error instead of answered.")
        if self.duplicated:
            out.append(f"{self.duplicated} of {n} requestIds were stored twice.")
        if self.mismatched:
            out.append(f"{self.mismatched} of {n} streamed answers differ from the stored answer.")
        if self.heal_s is None or self.heal_s > HEAL_LIMIT_S:
            out.append(f"No new chat succeeded within {HEAL_LIMIT_S:.0f} s of the fault.")
        return out

    def details(self, limit: int = 100) -> list[str]:
        """What the failed chats and probes saw, one line each (for a person reading a failure)."""
        lines = [f"{self.fault.name} ({self.fault.summary}); hit: {', '.join(self.hit)}"]
        for chat in [c for c in self.chats if c.outcome != "done" or not c.answered_by][:limit]:
            lines.append(
                f"  chat {chat.index} {chat.request_id}: {chat.outcome}; answered by "
                f"{chat.answered_by or '-'}; stored user/answer {chat.stored_users}/{chat.stored_answers}; "
                + "; ".join(chat.notes[-4:])
            )
        if self.probe_failures:
            lines.append(f"  new chats before healing: {'; '.join(self.probe_failures[-4:])}")
        return lines

    def row(self) -> list[str]:
        def seconds(value: float | None, limit: float) -> str:
            return f">{limit:.0f}" if value is None else f"{value:.1f}"

        return [
            self.fault.name,
            str(len(self.chats)),
            "-" if self.fault.twins else str(self.streaming),
            str(self.count("done")),
            str(self.count("error")),
            str(self.count("closed")),
            str(self.count("hung")),
            str(self.answered),
            str(self.failed),
            str(self.lost),
            str(self.duplicated),
            seconds(self.last_frame_s, SETTLE_S),
            seconds(self.heal_s, OBSERVE_HEAL_S),
            "pass" if not self.problems() else "FAIL",
        ]


HEADER = [
    "fault", "chats", "mid-stream", "done", "error", "closed", "hung",
    "answered", "failed", "lost", "duplicated", "last frame (s)", "heal (s)", "verdict",
]  # fmt: skip


def table(results: list[FaultResult]) -> str:
    """A Markdown table, one row per fault."""
    rows = [HEADER, ["---"] * len(HEADER), *(r.row() for r in results)]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


async def run_fault(service: ServiceDir, fault: Fault, chats: int = 20) -> FaultResult:
    """Inject `fault` while `chats` answers stream; see the module docstring for what is recorded."""
    tag = f"{fault.name}-{uuid.uuid4().hex[:6]}"
    run = Run(service, fault, [Chat(i, f"chaos-{tag}-{i}", str(uuid.uuid4())) for i in range(chats)])
    injected: Injected | None = None
    probe_failures: list[str] = []
    try:
        await asyncio.gather(*(_start(run, chat) for chat in run.chats))
        streaming = 0 if fault.twins else await _streaming(run.chats)
        fault_at = time.monotonic()
        injected = await fault.inject(run)
        heal = asyncio.create_task(_heal(service, fault_at, tag, probe_failures))
        await asyncio.gather(*(_follow(run, chat, fault_at) for chat in run.chats))
        heal_s = await heal
        waiting = [c for c in run.chats if c.outcome != "done"]
        recover_s = RECOVER_S if heal_s is not None else 5.0  # not healed: one short try each
        await asyncio.gather(*(_recover(service, c, time.monotonic() + recover_s) for c in waiting))
        async with httpx.AsyncClient(base_url=service.base, timeout=10) as rest:
            await asyncio.gather(*(_audit(service, rest, chat) for chat in run.chats))
    finally:
        if injected is not None and injected.undo is not None:
            injected.undo.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await injected.undo
        await asyncio.gather(*(f.close() for chat in run.chats for f in (*chat.follows, *chat.spent)))
    assert injected is not None
    ends = [c.ended_at for c in run.chats]
    last = None if None in ends else max(0.0, *(e - fault_at for e in ends if e is not None))
    return FaultResult(fault, run.chats, streaming, injected.hit, last, heal_s, probe_failures)


async def _start(run: Run, chat: Chat) -> None:
    follows = [await Follow.open(run.service, chat.user, chat.request_id) for _ in range(1 + run.fault.twins)]
    chat.follows = follows
    await asyncio.gather(*(f.client.send(PROMPT, request_id=chat.request_id) for f in follows))
    if not run.fault.twins:
        ack = await asyncio.wait_for(follows[0].reply.ack, 30)
        chat.conversation_id = ack.conversation_id
        chat.conversations.add(ack.conversation_id)


async def _streaming(chats: list[Chat], timeout: float = 45) -> int:
    """Wait until every answer has its first delta or has ended, so that the fault lands mid-stream
    (some jobs wait seconds for a retry); answers how many are streaming now."""
    waits = [_first(f.reply.streaming, f.reply.ended) for c in chats for f in c.follows]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*waits), timeout)
    return sum(
        1 for c in chats if c.follows[0].reply.streaming.is_set() and not c.follows[0].reply.ended.is_set()
    )


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _follow(run: Run, chat: Chat, fault_at: float) -> None:
    """Wait for the end of each of the chat's streams, as its client would (reconnecting after a drop)."""
    deadline = fault_at + SETTLE_S
    if run.fault.drop:
        old = chat.follows[0]
        await asyncio.wait({old.client._reader}, timeout=deadline - time.monotonic())
        chat.spent.append(old)
        try:
            new = await Follow.open(run.service, chat.user, chat.request_id)
            chat.follows = [Follow(new.client, old.reply)]
            await new.client.resume(chat.request_id, after_seq=old.reply.next_seq - 1, reply=old.reply)
        except NETWORK_ERRORS as exc:
            chat.outcome = "hung"
            chat.notes.append(f"reconnect: {exc!r}")
            return
    outcomes = [await f.end(deadline - time.monotonic()) for f in chat.follows]
    rank = ["hung", "closed", "error", "done"]
    chat.outcome = min((o for o, _ in outcomes), key=rank.index)
    ends = [t for _, t in outcomes]
    chat.ended_at = None if None in ends else max(t for t in ends if t is not None)
    for f in chat.follows:
        if f.reply.error is not None and f.reply.ended.is_set():
            chat.codes.append(f.reply.error.code)
            chat.notes.append(f"stream: {_describe('error', f.reply)}")
        if f.reply.ack.done() and not f.reply.ack.exception():
            chat.conversation_id = chat.conversation_id or f.reply.ack.result().conversation_id
            chat.conversations.add(f.reply.ack.result().conversation_id)
    if chat.outcome == "done":
        chat.answered_by = "stream"
        chat.streamed = [f.reply.text_so_far for f in chat.follows if f.reply.text_so_far]


async def _heal(service: ServiceDir, fault_at: float, tag: str, failures: list[str]) -> float | None:
    """Seconds from the fault to the first new chat that ends `done`; None if none within OBSERVE_HEAL_S.
    Each try is a new user, so tries that never settled do not count against the next one's limits."""
    tries = 0
    while (left := fault_at + OBSERVE_HEAL_S - time.monotonic()) > 0:
        started, tries = time.monotonic(), tries + 1
        try:
            follow = await asyncio.wait_for(
                Follow.open(service, f"chaos-{tag}-probe-{tries}", str(uuid.uuid4())), min(10, left)
            )
        except NETWORK_ERRORS as exc:
            failures.append(f"connect: {exc!r}")
        else:
            try:
                await follow.client.send(PROBE, request_id=follow.reply.request_id)
                outcome, ended_at = await follow.end(min(10, fault_at + OBSERVE_HEAL_S - time.monotonic()))
                if outcome == "done" and ended_at is not None:
                    return ended_at - fault_at
                failures.append(_describe(outcome, follow.reply))
            except NETWORK_ERRORS as exc:
                failures.append(f"send: {exc!r}")
            finally:
                await follow.close()
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    return None


def _describe(outcome: str, reply: Reply) -> str:
    error = reply.error if outcome == "error" else None
    return f"{outcome} {error.code}: {error.message}" if error else outcome


async def _recover(service: ServiceDir, chat: Chat, deadline: float) -> None:
    """What a client does after a failure: resume the requestId, else send the same sendMessage again."""
    while (left := deadline - time.monotonic()) > 0:
        started = time.monotonic()
        try:
            follow = await asyncio.wait_for(Follow.open(service, chat.user, chat.request_id), min(10, left))
        except NETWORK_ERRORS as exc:
            chat.notes.append(f"connect: {exc!r}")
            await asyncio.sleep(1)
            continue
        try:
            await follow.client.resume(chat.request_id, after_seq=0, reply=follow.reply)
            outcome, _ = await follow.end(min(8, deadline - time.monotonic()))
            if outcome == "done":
                chat.answered_by = "resume"
                chat.streamed = [follow.reply.text_so_far] if follow.reply.text_so_far else []
                return
            chat.notes.append(f"resume: {_describe(outcome, follow.reply)}")
            again = TrackedReply(chat.request_id)
            follow.client.replies[chat.request_id] = again
            follow.reply = again
            await follow.client.send(PROMPT, request_id=chat.request_id)
            outcome, _ = await follow.end(min(20, deadline - time.monotonic()))
            if again.ack.done() and not again.ack.exception():
                chat.conversations.add(again.ack.result().conversation_id)
                chat.conversation_id = chat.conversation_id or again.ack.result().conversation_id
            if outcome == "done":
                chat.answered_by = "resend"
                chat.streamed = [again.text_so_far] if again.text_so_far else []
                return
            chat.notes.append(f"resend: {_describe(outcome, again)}")
            if outcome == "error" and again.error is not None and again.error.retry_after is None:
                chat.final_error = _describe(outcome, again)  # the service's last word: not worth a retry
                return
            retry_after = again.error.retry_after if again.error and again.error.retry_after else 1.0
            await asyncio.sleep(min(retry_after, 5.0, max(0.0, deadline - time.monotonic())))
        except NETWORK_ERRORS as exc:
            chat.notes.append(f"recover: {exc!r}")
        finally:
            await follow.close()
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


async def _audit(service: ServiceDir, rest: httpx.AsyncClient, chat: Chat) -> None:
    """Count the chat's stored messages through the REST API: one user message, at most one answer."""
    headers = {"Authorization": f"Bearer {service.token(chat.user)}"}
    if not chat.conversations:
        chat.notes.append("audit: no ack named a conversation")
    for conversation in chat.conversations:
        try:
            response = await rest.get(f"/v1/conversations/{conversation}/messages", headers=headers)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            chat.notes.append(f"audit: {exc!r}")
            continue
        mine = [m for m in response.json()["items"] if m["requestId"] == chat.request_id]
        chat.stored_users += sum(1 for m in mine if m["role"] == "user")
        answers = [m for m in mine if m["role"] == "assistant"]
        chat.stored_answers += len(answers)
        if answers:
            chat.stored_text = answers[0]["content"]


async def chat_works(service: ServiceDir, timeout: float = 30) -> bool:
    """One new chat ends `done` within `timeout` (also warms the service before a fault)."""
    deadline = time.monotonic() + timeout
    try:
        user = f"chaos-ready-{uuid.uuid4().hex[:8]}"
        follow = await asyncio.wait_for(Follow.open(service, user, str(uuid.uuid4())), timeout)
    except NETWORK_ERRORS:
        return False
    try:
        await follow.client.send(PROBE, request_id=follow.reply.request_id)
        outcome, _ = await follow.end(deadline - time.monotonic())
        return outcome == "done"
    except NETWORK_ERRORS:
        return False
    finally:
        await follow.close()


async def ensure_ready(service: ServiceDir, patience_s: float = 30) -> bool:
    """Make sure a chat works before the next fault: restart the service if a fault left it broken.
    Answers whether it had to restart. (A service's first chat may wait for models to load.)"""
    if await asyncio.to_thread(service.healthy) and await chat_works(service, patience_s):
        return False
    await service.restart()
    if not await chat_works(service, timeout=60):
        raise RuntimeError(f"A chat fails even after restarting `chatstack up` on {service.data_dir}.")
    return True
