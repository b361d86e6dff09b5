"""The local LMI-compatible model server (the contract is in `app.py`).

`serve_in_thread` runs an app on its own event loop in a background thread, for callers that are
synchronous (the worker's model client, in-process runtimes, tests) and must not block the loop that
serves them.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any


class ThreadedServer:
    """A uvicorn server on a background thread; `url` is its base URL, `stop()` ends it."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any) -> None:
        import uvicorn  # the local extra; the Lambda bundle never imports this module

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        options = {"log_level": "warning", "timeout_graceful_shutdown": 2, **uvicorn_options}
        self._server = uvicorn.Server(uvicorn.Config(app, **options))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"model-server-{self.port}", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported to the starter, who is waiting for `started`
            self._error = exc

    def start(self, timeout_s: float = 10.0) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"model server on port {self.port} did not start: {self._error}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"model server on port {self.port} did not start in {timeout_s} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any
) -> ThreadedServer:
    """Start `app` on a background thread and return once it listens."""
    return ThreadedServer(app, host, port, **uvicorn_options).start()
