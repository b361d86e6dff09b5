"""Shared fixtures: real uvicorn servers on free ports, in the test's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute

ServeRoutes = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve_routes() -> AsyncIterator[ServeRoutes]:
    """`await serve_routes(build, **uvicorn_options)` serves `build(base_url)` and answers base_url.

    The port is bound before `build` runs, so components that must know their own URL (a queue URL)
    get it at construction.
    """
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(build: Callable[[str], list[BaseRoute]], **options: Any) -> str:
        # IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets whose proto says TCP; without it every
        # request pays a 40 ms delayed-ACK stall.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = Starlette(routes=build(base_url))
        config = uvicorn.Config(app, log_level="warning", lifespan="off", **options)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        servers.append((server, task))
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        return base_url

    yield start
    for server, _ in servers:
        server.should_exit = True
    await asyncio.gather(*(task for _, task in servers))
