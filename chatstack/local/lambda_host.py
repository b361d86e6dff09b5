"""The local Lambda service: the functions of the wiring module run in their own process, invoked over
the Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`), as API Gateway and the SQS
event source mapping invoke them in the cloud.

Why a process of its own: the handlers are CPU-bound Python (boto3 signing, JSON, Pydantic). Sharing
one interpreter with the gateway emulator would put every @connections post and every handler under
one GIL; separate processes use separate cores, as API Gateway and Lambda are separate services.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from typing import Any

from chatstack.local.internal_auth import ENV_SECRET, SecretGuard, body_of, secret_headers
from chatstack.local.lambda_context import NotInvoked, load_handler
from chatstack.local.process import ReadyProcess, run_event_loop
from lambdas import wiring
from lambdas.adapters.http1 import NoAnswer, Origin

INVOKE_PATH = "/2015-03-31/functions/{name}/invocations"
READY = "lambda host ready on "
HOST_KEEP_ALIVE_S = 3600


class FunctionError(Exception):
    """A handler raised: Lambda answers 200 with `X-Amz-Function-Error` and the error as the body."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class HostsUnavailable(NotInvoked):
    """No Lambda host accepted the connection (all are down or restarting)."""


class HostPool:
    """The Lambda host processes; each invocation goes to the host with the fewest in flight.

    A host that refuses a connection is out of rotation until the supervisor has restarted it
    (`replace`), so invocations do not keep trying a dead port.
    """

    def __init__(self, urls: list[str]) -> None:
        self.urls = list(urls)
        self.origins = [_origin(url) for url in urls]
        self.up = [True] * len(urls)
        self.in_flight = [0] * len(urls)
        self.lock = threading.Lock()

    def acquire(self, tried: set[int] | frozenset[int] = frozenset()) -> int:
        with self.lock:
            candidates = [i for i in range(len(self.urls)) if self.up[i] and i not in tried]
            if not candidates:  # every host looks down: one that might be back is better than none
                candidates = [i for i in range(len(self.urls)) if i not in tried]
            if not candidates:
                raise HostsUnavailable("No Lambda host accepted the invocation.")
            index = min(candidates, key=self.in_flight.__getitem__)
            self.in_flight[index] += 1
            return index

    def release(self, index: int) -> None:
        with self.lock:
            self.in_flight[index] -= 1

    def mark_down(self, index: int) -> None:
        with self.lock:
            self.up[index] = False

    def replace(self, index: int, url: str) -> None:
        """The host at `index` was restarted and listens on `url`."""
        with self.lock:
            self.urls[index] = url
            self.origins[index] = _origin(url)
            self.up[index] = True


def _origin(url: str) -> Origin:
    """Kept connections to one host (lambdas/adapters/http1.py, the client the handlers' own hot path
    uses): two invocations per chat pass here."""
    return Origin(url, connect_timeout_s=5, max_idle=256)


class RemoteFunction:
    """A sync handler callable that invokes a function in a Lambda host (what the emulators call)."""

    def __init__(self, pool: HostPool, function: wiring.Function) -> None:
        self.pool = pool
        self.function = function
        self.path = INVOKE_PATH.format(name=function.name)

    def __call__(self, event: dict[str, Any], context: Any = None) -> Any:
        body = json.dumps(event).encode()
        tried: set[int] = set()
        headers = {"Content-Type": "application/json", **_internal_headers()}
        while True:
            index = self.pool.acquire(tried)
            try:
                response = self.pool.origins[index].request(
                    "POST", self.path, body, headers, read_timeout_s=self.function.timeout_s + 5,
                    retry_dropped=False,
                )
                break
            except NoAnswer as exc:
                if exc.sent:  # dropped mid-invocation: like Lambda, a failed invocation (it may have run)
                    raise
                # Refused or never connected: the handler never ran, so another host may run it.
                self.pool.mark_down(index)
                tried.add(index)
            finally:
                self.pool.release(index)
        payload = json.loads(response.data or b"null")
        if response.status != 200:
            raise RuntimeError(f"Lambda invoke of {self.function.name} answered {response.status}: {payload}")
        if response.headers.get("x-amz-function-error"):
            # API Gateway's authorizer contract hinges on the message ("Unauthorized" -> 401).
            raise FunctionError(str(payload.get("errorType")), str(payload.get("errorMessage")))
        return payload


def _internal_headers() -> dict[str, str]:
    # The run's secret: the host answers no one else on this machine (internal_auth.py).
    return secret_headers(os.environ.get(ENV_SECRET))


def remote_functions(urls: list[str] | HostPool) -> dict[str, RemoteFunction]:
    pool = urls if isinstance(urls, HostPool) else HostPool(urls)
    return {f.name: RemoteFunction(pool, f) for f in wiring.FUNCTIONS}


def create_host_app(*, preload: bool = True) -> Any:
    """The ASGI app of the host process: `POST /2015-03-31/functions/{name}/invocations` for every
    function of the wiring module, each invocation on a thread (the handlers are sync, as in Lambda).
    With `preload` (the default), every handler module is imported before the app is returned, as Lambda's init
    phase imports a function's handler before its first invocation: otherwise the first invocation of
    each function in each host pays the import (about 0.1 s of CPU each), in the middle of traffic.

    A bare ASGI app, not a Starlette route: two invocations per chat pass here, and Starlette's
    routing, request and middleware layers cost a few percent of the hosts' CPU under load."""
    from starlette.types import Receive, Scope, Send

    from chatstack.local.threads import Threads

    handlers = {f.name: load_handler(f) for f in wiring.FUNCTIONS}
    if preload:
        for handler in handlers.values():
            handler.load()
    threads = Threads(1000, "lambda")
    prefix, suffix = INVOKE_PATH.split("{name}")

    def run(name: str, event: Any) -> tuple[bytes, bool]:
        try:
            result, failed = handlers[name](event), False
        except Exception as exc:  # reported to the caller as a function error, like Lambda
            if str(exc) != "Unauthorized":  # an authorizer's refusal is an answer, not a failure
                traceback.print_exc()
            result, failed = {"errorType": type(exc).__name__, "errorMessage": str(exc)}, True
        return json.dumps(result).encode(), failed

    async def respond(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + extra})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        name = path[len(prefix) : -len(suffix)] if path.startswith(prefix) and path.endswith(suffix) else ""
        if name not in handlers:
            message = f"Function not found: {name}" if name else f"No such path: {path}"
            await respond(send, 404, json.dumps({"Type": "User", "message": message}).encode(), [])
            return
        if scope["method"] != "POST":
            await respond(send, 405, b'{"Type": "User", "message": "Method not allowed"}', [])
            return
        body = await body_of(receive)
        if body is None:
            return  # the caller went away
        try:
            event = json.loads(body)
        except ValueError:  # what Lambda answers: 400 InvalidRequestContentException
            refusal = {"Type": "User", "message": "Could not parse request body into json"}
            await respond(send, 400, json.dumps(refusal).encode(), [])
            return
        result, failed = await threads.run(run, name, event)
        await respond(send, 200, result, [(b"x-amz-function-error", b"Unhandled")] if failed else [])

    secret = os.environ.get(ENV_SECRET)
    return SecretGuard(app, secret=secret) if secret else app


def lambda_host_process(index: int = 0) -> ReadyProcess:
    """A Lambda host in its own process (the environment it inherits is the functions' settings)."""
    return ReadyProcess(
        [sys.executable, "-m", "chatstack.local.lambda_host"],
        READY,
        f"Lambda host {index}",
        name=f"lambda-{index}",
    )


def main() -> None:
    import asyncio
    import contextlib
    import socket
    import warnings

    import uvicorn

    warnings.filterwarnings("ignore", message="No application metrics to publish")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    from lambdas.runtime import deps

    d = deps()  # cold start once, before the first invocation
    d.cache.ping()
    d.connections  # noqa: B018
    d.queue  # noqa: B018
    d.model  # noqa: B018
    # Warm the worker's retrieval (embedding model, pgvector pool) so the first answer starts as fast
    # as the tenth; a failure here is left for the first request to report.
    with contextlib.suppress(Exception):
        if d.retriever is not None:
            d.retriever.retrieve(tenant_id="warm-up", query="warm up", k=1, min_score=1.0)
    # The gateway's HostPool is the only client and keeps its connections for reuse. uvicorn's default
    # keep-alive (5 s) closed idle ones while the pool could pick one for the next invocation: the
    # request then met a reset, and the invocation failed (the SQS mapping retried it after a backoff,
    # a WebSocket route answered "Internal server error"). An hour outlives any pause in the traffic.
    config = uvicorn.Config(
        create_host_app(), log_level="warning", lifespan="off",
        timeout_keep_alive=HOST_KEEP_ALIVE_S,
        access_log=False,  # at "warning" none is printed, but uvicorn formats one per invocation
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                return await task
            await asyncio.sleep(0.02)
        print(f"{READY}http://127.0.0.1:{port}", flush=True)
        await task

    run_event_loop(serve())


if __name__ == "__main__":
    main()
