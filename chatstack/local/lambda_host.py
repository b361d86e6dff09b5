"""The local Lambda service: the functions of the wiring module run in their own process, invoked over
the Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`), as API Gateway and the SQS
event source mapping invoke them in the cloud.

Why a process of its own: the handlers are CPU-bound Python (boto3 signing, JSON, Pydantic). Sharing
one interpreter with the gateway emulator would put every @connections post and every handler under
one GIL; separate processes use separate cores, as API Gateway and Lambda are separate services.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chatstack.local.internal_auth import ENV_SECRET, SecretGuard, body_of, secret_headers
from chatstack.local.lambda_context import LocalLambdaContext, NotInvoked, load_handler
from chatstack.local.process import ReadyProcess, run_event_loop
from lambdas import wiring
from lambdas.adapters.http1 import NoAnswer, Origin

INVOKE_PATH = "/2015-03-31/functions/{name}/invocations"
READY = "lambda host ready on "
HOST_KEEP_ALIVE_S = 3600
# The function's timeout, as the caller (standing in for the Lambda service, which holds the function's
# configuration) tells the host with each invocation; without it the host uses the wiring's.
TIMEOUT_HEADER = "x-chatstack-function-timeout-ms"
# The liveness probe `up` sends (answered on the event loop, never on a handler thread).
ALIVE_PATH = "/.chatstack/alive"
# How a host exits once an invocation timed out: its environment is torn down, as Lambda does, and `up`
# starts a new one at once (not counted as a death: chatstack.local.supervisor).
RECYCLE_EXIT_CODE = 75
TIMED_OUT = "Sandbox.Timedout"
# The answer of every other invocation of a host that tears its environment down (Recycled).
RECYCLED_HEADER = "x-chatstack-recycled"
RECYCLED_BODY = b'{"Type": "Service", "message": "The execution environment was recycled."}'


class FunctionError(Exception):
    """A handler raised: Lambda answers 200 with `X-Amz-Function-Error` and the error as the body."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class HostsUnavailable(NotInvoked):
    """No Lambda host accepted the connection (all are down or restarting)."""


class Recycled(NotInvoked):
    """The host tore its environment down under this invocation because another one on it timed out
    (a local host runs many invocations where a Lambda environment runs one). Not this invocation's
    failure: the caller may run it again, and a queue does not count the receive (it may have run in
    part, as an invocation cut by a service fault may have)."""


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
        from lambdas.config import get_settings, parse_function_timeouts

        overrides = parse_function_timeouts(get_settings().function_timeouts)
        self.timeout_s: float = overrides.get(function.name, function.timeout_s)
        self.headers = {"Content-Type": "application/json", TIMEOUT_HEADER: str(int(self.timeout_s * 1000))}

    def __call__(self, event: dict[str, Any], context: Any = None) -> Any:
        body = json.dumps(event).encode()
        tried: set[int] = set()
        headers = {**self.headers, **_internal_headers()}
        while True:
            index = self.pool.acquire(tried)
            try:
                # The host answers at the timeout; 5 s more is for a host that answers nothing (hung),
                # which the liveness probe then replaces.
                response = self.pool.origins[index].request(
                    "POST",
                    self.path,
                    body,
                    headers,
                    read_timeout_s=self.timeout_s + 5,
                    retry_dropped=False,
                )
                if response.headers.get(RECYCLED_HEADER) == "not-started":
                    # The host is tearing its environment down and ran nothing of it: another may.
                    self.pool.mark_down(index)
                    tried.add(index)
                    continue
                break
            except NoAnswer as exc:
                if exc.sent:  # dropped mid-invocation: like Lambda, a failed invocation (it may have run)
                    raise
                # Refused or never connected: the handler never ran, so another host may run it.
                self.pool.mark_down(index)
                tried.add(index)
            finally:
                self.pool.release(index)
        if response.headers.get(RECYCLED_HEADER):  # cut: it ran in part when the host went
            raise Recycled(f"The Lambda host of {self.function.name} was recycled under the invocation.")
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


class _TimedOut(Exception):
    """Set on an invocation's future by its timer: the function's timeout passed first."""


class _Recycled(Exception):
    """Set on the other invocations' futures when one timed out: the environment is going."""


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(_TimedOut())


def recycle() -> None:
    """Tear the environment down: every thread of this process stops at once, the one still running
    the timed-out handler with them, so nothing of that invocation acts afterwards (Python cannot stop
    one thread). `up` starts a new host at once (RECYCLE_EXIT_CODE)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(RECYCLE_EXIT_CODE)


def create_host_app(on_timeout: Callable[[], None] = recycle, *, preload: bool = True) -> Any:
    """The ASGI app of the host process: `POST /2015-03-31/functions/{name}/invocations` for every
    function of the wiring module, each invocation on a thread (the handlers are sync, as in Lambda).
    With `preload` (the default), every handler module is imported before the app is returned, as
    Lambda's init phase imports a function's handler before its first invocation: otherwise the first
    invocation of each function in each host pays the import (about 0.1 s of CPU each), in the middle
    of traffic.

    An invocation still running at the function's timeout is answered at once with Lambda's timeout
    error (200, `X-Amz-Function-Error: Unhandled`, `{"errorType": "Sandbox.Timedout", "errorMessage":
    "RequestId: ... Error: Task timed out after N.00 seconds"}`), then `on_timeout` runs: by default
    the process exits (`recycle`), as Lambda tears down the environment of a timed-out invocation. One
    timer per invocation on the event loop; no thread is added. The host's other invocations, cut by
    that, are answered 503 with `x-chatstack-recycled: cut` first (RemoteFunction raises Recycled, a
    NotInvoked), and one that arrives meanwhile with `not-started` (another host runs it).

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
    timeout_header = TIMEOUT_HEADER.encode()
    pending: dict[asyncio.Future[Any], asyncio.Event] = {}  # invocations running, to their answer
    recycling = False

    def run(name: str, event: Any, context: LocalLambdaContext) -> tuple[bytes, bool]:
        try:
            result, failed = handlers[name](event, context), False
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
        if path == ALIVE_PATH:  # the liveness probe: answered here, whatever the handler threads do
            await respond(send, 200, b"{}", [])
            return
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
        timeout_s: float | None = None
        for key, value in scope["headers"]:
            if key == timeout_header:
                timeout_s = int(value) / 1000
                break
        if recycling:  # the environment is going: another host runs it (nothing of it ran here)
            await respond(send, 503, RECYCLED_BODY, [(RECYCLED_HEADER.encode(), b"not-started")])
            return
        context = handlers[name].new_context(timeout_s)
        future = threads.submit(run, name, event, context)
        answered = asyncio.Event()
        pending[future] = answered
        timer = asyncio.get_running_loop().call_later(context.timeout_s, _expire, future)
        try:
            try:
                result, failed = await future
            except _Recycled:
                await respond(send, 503, RECYCLED_BODY, [(RECYCLED_HEADER.encode(), b"cut")])
                return
            except _TimedOut:
                await time_out(send, name, context, future)
                return
            timer.cancel()
            await respond(send, 200, result, [(b"x-amz-function-error", b"Unhandled")] if failed else [])
        finally:
            pending.pop(future, None)
            answered.set()

    async def time_out(send: Send, name: str, context: LocalLambdaContext, future: Any) -> None:
        """Answer Lambda's timeout error, the host's other invocations as recycled, then tear down."""
        nonlocal recycling
        recycling = True
        try:
            after = f"Task timed out after {context.timeout_s:.2f} seconds"
            message = f"RequestId: {context.aws_request_id} Error: {after}"
            # What Lambda writes to the function's log; then the environment goes (on_timeout).
            stamp = datetime.now(UTC).isoformat()
            print(
                f"{stamp} {context.aws_request_id} {after} ({name}); the Lambda host exits", file=sys.stderr
            )
            error = json.dumps({"errorType": TIMED_OUT, "errorMessage": message}).encode()
            await respond(send, 200, error, [(b"x-amz-function-error", b"Unhandled")])
            others = {f: answered for f, answered in pending.items() if f is not future}
            for other in others:
                if not other.done():
                    other.set_exception(_Recycled())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):  # their answers written before the process goes
                    await asyncio.gather(*(answered.wait() for answered in others.values()))
        finally:
            on_timeout()

    secret = os.environ.get(ENV_SECRET)
    return SecretGuard(app, secret=secret) if secret else app


def lambda_host_process(index: int = 0) -> ReadyProcess:
    """A Lambda host in its own process (the environment it inherits is the functions' settings)."""
    host = ReadyProcess(
        [sys.executable, "-m", "chatstack.local.lambda_host"],
        READY,
        f"Lambda host {index}",
        name=f"lambda-{index}",
        probe_path=ALIVE_PATH,
    )
    host.recycle_code = RECYCLE_EXIT_CODE
    return host


def main() -> None:
    warm_up()
    serve(create_host_app())


def warm_up() -> None:
    """The cold start, once, before the first invocation."""
    import warnings

    warnings.filterwarnings("ignore", message="No application metrics to publish")
    from lambdas.runtime import deps

    d = deps()
    d.cache.ping()
    d.connections  # noqa: B018
    d.queue  # noqa: B018
    d.model  # noqa: B018
    # Warm the worker's retrieval (embedding model, pgvector pool) so the first answer starts as fast
    # as the tenth; a failure here is left for the first request to report.
    with contextlib.suppress(Exception):
        if d.retriever is not None:
            d.retriever.retrieve(tenant_id="warm-up", query="warm up", k=1, min_score=1.0)


def serve(app: Any) -> None:
    """Serves `app` on a free loopback port and prints READY and its URL once it listens."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The gateway's HostPool is the only client and keeps its connections for reuse. uvicorn's default
    # keep-alive (5 s) closed idle ones while the pool could pick one for the next invocation: the
    # request then met a reset, and the invocation failed (the SQS mapping retried it after a backoff,
    # a WebSocket route answered "Internal server error"). An hour outlives any pause in the traffic.
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        timeout_keep_alive=HOST_KEEP_ALIVE_S,
        access_log=False,  # at "warning" none is printed, but uvicorn formats one per invocation
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                return await task
            await asyncio.sleep(0.02)
        print(f"{READY}http://127.0.0.1:{port}", flush=True)
        await task

    run_event_loop(run())


if __name__ == "__main__":
    main()
