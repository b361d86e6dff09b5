"""Restarts the children of `chatstack up` when they die, with backoff, and gives up (so an outer
supervisor can act) when one keeps dying."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from chatstack.local.process import Child

log = logging.getLogger("chatstack.up")


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0
    limit: int = 5  # more deaths than this within window_s: give up
    window_s: float = 60.0
    poll_s: float = 0.2
    # Liveness: a child that answers none of `probe_failures` probes in a row, one every
    # `probe_interval_s` (each given that long), is killed and then restarted as a dead one. 0: off.
    probe_interval_s: float = 5.0
    probe_failures: int = 0
    # A child that recycles itself (recycle_code) is started again at once and is no death, up to this
    # many times within window_s; past that each recycle counts as a death (backoff, then giving up):
    # a function that times out on every call must not keep killing its host's other invocations.
    recycle_limit: int = 20


class ChildKeepsDying(Exception):
    """A child died more than `limit` times within `window_s`; the message is one sentence."""


class Supervisor:
    """One task per child: wait for it to exit, tell the runtime, restart it after a backoff.

    `on_down(child)` runs as soon as a death is seen (e.g. take a Lambda host out of rotation);
    `on_up(child)` once the restarted child is ready (its new URL is `child.url`).
    """

    def __init__(
        self,
        children: list[Child],
        policy: RestartPolicy,
        on_down: Callable[[Child], None],
        on_up: Callable[[Child], None],
    ) -> None:
        self.children = children
        self.policy = policy
        self.on_down = on_down
        self.on_up = on_up
        self.restarts: dict[str, int] = {child.name: 0 for child in children}

    async def run(self) -> None:
        """Returns never; raises ChildKeepsDying. Cancel it to stop supervising."""
        tasks = [asyncio.create_task(self._watch(c), name=f"watch {c.name}") for c in self.children]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self, child: Child) -> None:
        p = self.policy
        deaths: deque[float] = deque()
        recycles: deque[float] = deque()
        delay = p.first_delay_s
        up_since = time.monotonic()
        liveness = _Liveness(child, p)
        while True:
            code = child.poll()
            if code is None:
                liveness.check()
                await asyncio.sleep(p.poll_s)
                continue
            liveness.reset()
            now = time.monotonic()
            self.on_down(child)
            if child.recycle_code is not None and code == child.recycle_code:
                recycles.append(now)
                while recycles and now - recycles[0] > p.window_s:
                    recycles.popleft()
                if len(recycles) <= p.recycle_limit:
                    # It ended itself to be started anew (a Lambda host after a timed-out invocation, as
                    # Lambda recycles an environment): at once, and no death.
                    log.warning("%s exited after a timed-out invocation; starting a new one", child.what)
                    await self._restart(child)
                    up_since = time.monotonic()
                    continue
                log.warning(
                    "%s timed out %d times in %g s: counted as a death from now on",
                    child.what, len(recycles), p.window_s,
                )
            if now - up_since > p.window_s:
                delay = p.first_delay_s  # it ran well for a while: this is a new incident
            deaths.append(now)
            while deaths and now - deaths[0] > p.window_s:
                deaths.popleft()
            if len(deaths) > p.limit:
                raise ChildKeepsDying(
                    f"chatstack up is stopping: {child.what} died {len(deaths)} times in "
                    f"{p.window_s:g} s (last exit code {code})."
                )
            log.warning("%s exited (code %s); restarting in %g s", child.what, code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, p.max_delay_s)
            await self._restart(child)
            up_since = time.monotonic()

    async def _restart(self, child: Child) -> None:
        try:
            await asyncio.to_thread(child.prepare)
            child.spawn()  # on this (the loop's) thread: see chatstack.local.process
            await asyncio.to_thread(child.wait_ready)
        except (Exception, SystemExit) as exc:  # wait_ready says why in one sentence
            log.warning("%s did not restart: %s", child.what, exc)
            await asyncio.to_thread(child.stop)
            return  # its exit code is seen at once and counted as a death
        self.restarts[child.name] += 1
        log.warning("%s restarted (pid %s)", child.what, child.pid)
        self.on_up(child)


class _Liveness:
    """The probes of one running child, from its watch loop: one at a time, each in a worker thread
    and bounded by the interval; after `probe_failures` unanswered in a row the child is killed."""

    def __init__(self, child: Child, policy: RestartPolicy) -> None:
        self.child = child
        self.policy = policy
        self.misses = 0
        self.next_at = time.monotonic() + policy.probe_interval_s
        self.probe: asyncio.Task[bool | None] | None = None

    def reset(self) -> None:
        if self.probe is not None:
            self.probe.cancel()  # its thread ends within its timeout; the answer is dropped
        self.probe = None
        self.misses = 0
        self.next_at = time.monotonic() + self.policy.probe_interval_s

    def check(self) -> None:
        p = self.policy
        if p.probe_failures <= 0:
            return
        if self.probe is None:
            if time.monotonic() >= self.next_at:
                self.next_at = time.monotonic() + p.probe_interval_s
                self.probe = asyncio.create_task(asyncio.to_thread(self.child.probe, p.probe_interval_s))
            return
        if not self.probe.done():
            return
        answered = self.probe.result() if not self.probe.cancelled() and not self.probe.exception() else False
        self.probe = None
        if answered is None:  # this child has no probe
            self.next_at = float("inf")
            return
        self.misses = 0 if answered else self.misses + 1
        if self.misses >= p.probe_failures:
            log.warning(
                "%s (pid %s) is running but answered none of %d probes in %g s; killing it to restart it",
                self.child.what,
                self.child.pid,
                self.misses,
                self.misses * p.probe_interval_s,
            )
            self.child.kill_hung()
            self.misses = 0
