"""chatstack/local/threads.py: the emulators' hand-off of sync handler calls to threads keeps anyio's
rules (a limit on threads at once, daemon threads, a call that runs to its end when its caller stops
waiting) with reused threads."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from chatstack.local.threads import Threads


def test_results_and_errors_come_back_and_threads_are_reused_daemons() -> None:
    threads = Threads(4, "t")

    def fail() -> None:
        raise KeyError("nope")

    async def main() -> None:
        assert await threads.run(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(KeyError, match="nope"):
            await threads.run(fail)
        for _ in range(20):  # one at a time: the same thread each time
            assert await threads.run(threading.current_thread) is not threading.current_thread()
        assert threads.started == 1
        worker = await threads.run(threading.current_thread)
        assert worker.daemon and worker.name.startswith("t-")

    asyncio.run(main())


def test_at_most_limit_calls_run_at_once_and_the_rest_wait() -> None:
    threads = Threads(2)
    running, peak, lock = [0], [0], threading.Lock()

    def call() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.1)
        with lock:
            running[0] -= 1

    async def main() -> float:
        started = time.monotonic()
        await asyncio.gather(*(threads.run(call) for _ in range(6)))
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    assert peak[0] == 2 and threads.started == 2
    assert elapsed >= 0.29  # three rounds of two


def test_a_call_whose_caller_stops_waiting_runs_to_its_end() -> None:
    threads = Threads(1)
    finished = threading.Event()

    def slow() -> str:
        time.sleep(0.2)
        finished.set()
        return "late"

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await threads.run(slow)
        assert not finished.is_set()
        assert await threads.run(lambda: "next") == "next"  # queued behind it, on the same thread
        assert finished.is_set()

    asyncio.run(main())


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Threads(0)
