"""Sync calls from the local emulators' event loops, on reusable daemon threads.

The handlers are sync Python, as in Lambda, so every invocation leaves the event loop for a thread:
the gateway's routes and the SQS mapping call the Lambda hosts from one, and the hosts run each
handler on one, four hand-offs per chat. anyio's `to_thread.run_sync` does this with a capacity
limiter, a cancel scope and a task per call; a queue, a future and `call_soon_threadsafe` take less
than half its CPU per call with fifty at once (`chatstack bench hotpath --case handoff`;
docs/benchmarks.md, "Hot path"). The rules kept from anyio:

- at most `limit` threads run at once; further calls wait in the queue for the next free one;
- threads are daemons: a process that exits does not wait for a call still running (an invocation
  whose host died can wait minutes for its timeout);
- the call runs to its end even if the caller stops waiting (a timeout, a cancelled task); its
  result is then dropped, as an invocation's is when its caller has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class Threads:
    def __init__(self, limit: int, name: str = "invoke") -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        # Threads that finished a call and wait for the next; a call takes one, else starts a thread.
        self._idle = threading.Semaphore(0)
        self._started = 0
        self._lock = threading.Lock()

    @property
    def started(self) -> int:
        """Threads started so far (they are kept for later calls)."""
        return self._started

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.submit(fn, *args)

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """The call's future, on the running loop. Whoever settles it first wins: a caller that gives up
        (e.g. sets a timeout's exception on it) drops the call's own outcome, as a cancelled one does."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, args, loop, future))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                number = self._started + 1 if self._started < self.limit else None
                if number is not None:
                    self._started = number
            if number is not None:
                threading.Thread(target=self._serve, name=f"{self.name}-{number}", daemon=True).start()
        return future

    def _serve(self) -> None:
        while True:
            fn, args, loop, future = self._jobs.get()
            settle: Callable[[asyncio.Future[Any], Any], None]
            try:
                outcome, settle = fn(*args), _succeed
            except BaseException as exc:  # handed to the caller, as anyio does
                outcome, settle = exc, _fail
            # Idle before the caller learns the outcome: a caller that calls again at once finds this
            # thread instead of starting another.
            self._idle.release()
            _call_soon(loop, settle, future, outcome)
            del fn, args, future, outcome  # nothing of a finished call outlives it here


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed while the call ran: nobody waits for it
        loop.call_soon_threadsafe(callback, *args)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the caller stopped waiting (cancelled, timed out): the result is dropped
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
