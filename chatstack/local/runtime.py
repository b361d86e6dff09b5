"""`chatstack up`: the whole service on one machine, through the real handler code.

One uvicorn server carries the gateway emulator (WebSocket + @connections), the SQS stand-in, the
REST API (the very FastAPI app Lambda runs behind Mangum), the dev JWKS and the chat page. The model
server runs as its own process, as the LMI container does in the cloud. Handlers reach everything
through the same boto3 calls as in the cloud, pointed with endpoint URLs at these stand-ins.

The server has two listeners: the public one (WebSocket, REST, JWKS, page) and a loopback-only one
for what AWS keeps behind IAM (the queue and @connections), which checks the run's SigV4 credentials;
the Lambda hosts and the model server check the run's secret (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute

from chatstack.local.datadir import DataDirLock, write_json_atomic
from chatstack.local.embedded import PostgresChild, RedisChild
from chatstack.local.identity import AUDIENCE, ISSUER, DevIdentity
from chatstack.local.internal_auth import ByListener, RunCredentials, guarded, write_private_json
from chatstack.local.process import Child, ReadyProcess, stop_all
from chatstack.local.supervisor import ChildKeepsDying, RestartPolicy, Supervisor
from lambdas import wiring

if TYPE_CHECKING:
    from chatstack.local.lambda_host import HostPool

log = logging.getLogger("chatstack.up")


@dataclass
class RuntimeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".chatstack")
    model_url: str = ""  # an existing LMI-compatible server; empty starts the local one
    model_backend: str = "extractive"
    model_args: list[str] = field(default_factory=list)
    token_rate: float = 30.0
    flush_interval_ms: int = 100
    # Lambda execution environments: processes running the handlers (each its own interpreter and GIL).
    lambda_processes: int = 2
    idle_timeout_s: float = wiring.IDLE_TIMEOUT_S
    max_connection_s: float = wiring.MAX_CONNECTION_S
    log_level: str = "warning"
    extra_env: dict[str, str] = field(default_factory=dict)
    # `--as-deployed cdk.out/`: settings, routes and authorizers from the templates (as_deployed_mode.py)
    as_deployed: Path | None = None


@dataclass
class Urls:
    base: str
    websocket: str
    page: str
    model: str
    token: str


def model_process(backend: str, token_rate: float, extra: list[str]) -> ReadyProcess:
    """The local LMI-compatible model server in its own process, as the container is in the cloud.

    It starts on a free port; a restart reuses that port (see `_pin_port`), so the Lambda hosts'
    CHATSTACK_MODEL_ENDPOINT stays right without restarting them."""
    cmd = [
        sys.executable,
        "-m",
        "sagemaker_containers.server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--backend",
        backend,
        "--token-rate",
        str(token_rate),
        *extra,
    ]
    return ReadyProcess(cmd, "model server ready on ", "model server", name="model", probe_path="/ping")


def _pin_port(child: ReadyProcess) -> None:
    port = child.url.rsplit(":", 1)[1].split("/", 1)[0]
    child.cmd[child.cmd.index("--port") + 1] = port


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY only then
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise SystemExit(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
    sock.set_inheritable(True)
    return sock


def _page() -> str:
    return (resources.files("chatstack.web") / "index.html").read_text(encoding="utf-8")


class LocalRuntime:
    def __init__(self, options: RuntimeOptions) -> None:
        self.o = options
        self.pg: PostgresChild | None = None
        self.redis: RedisChild | None = None
        self.model: ReadyProcess | None = None
        self.lambda_hosts: list[ReadyProcess] = []
        self.identity = DevIdentity(options.data_dir / "identity")
        self.urls: Urls | None = None
        self.as_deployed: Any = None  # AsDeployedMode with --as-deployed
        self.server: uvicorn.Server | None = None
        self.lock = DataDirLock(options.data_dir)
        self.port = 0
        # The loopback listener of the internal endpoints and the credentials they check (_serve).
        self.internal_port = 0
        self.internal_base = ""
        self.credentials = RunCredentials.generate()
        self.pool: HostPool | None = None  # the Lambda hosts', once they run
        self.failure = ""  # why `up` gave up (a child kept dying), for the exit message
        self._main: asyncio.Task[Any] | None = None
        self._stopping = False

    # ---- start-up ------------------------------------------------------------------------------
    async def _start_data(self) -> tuple[str, str]:
        """Embedded PostgreSQL and Redis unless real ones are configured; leftovers of a crashed
        `up` in the data dir are cleared first (see chatstack.local.embedded)."""
        data = self.o.data_dir
        db_url = os.environ.get("DATABASE_URL") or os.environ.get("CHATSTACK_DATABASE_URL") or ""
        redis_url = os.environ.get("REDIS_URL") or os.environ.get("CHATSTACK_REDIS_URL") or ""
        if not db_url:
            self.pg = await asyncio.to_thread(PostgresChild, data / "pg")
            db_url = self.pg.url
        if not redis_url:
            self.redis = await asyncio.to_thread(RedisChild, data / "redis")
            redis_url = self.redis.url
        for child in (self.pg, self.redis):
            if child is not None:
                child.spawn()  # on the loop's thread (see chatstack.local.process)
        for child in (self.pg, self.redis):
            if child is not None:
                await self._ready_or_retry(child)
        return db_url, redis_url

    @staticmethod
    async def _ready_or_retry(child: Child, attempts: int = 3) -> None:
        """After a crash, what the old server left may hold on for a moment (PostgreSQL refuses
        to start while backends of a killed postmaster still hold its shared memory)."""
        for attempt in range(1, attempts + 1):
            try:
                await asyncio.to_thread(child.wait_ready)
                return
            except SystemExit as exc:
                if attempt == attempts:
                    raise
                log.warning("%s did not start (%s); trying again in 1 s", child.what, exc)
                await asyncio.to_thread(child.stop)
                await asyncio.sleep(1)
                child.spawn()

    @property
    def children(self) -> list[Child]:
        data: list[Child | None] = [self.pg, self.redis]
        return [c for c in [self.model, *self.lambda_hosts, *data] if c is not None]

    def write_state(self) -> None:
        """runtime.json: where the service and its children are (rewritten on every restart)."""
        if self.urls is None:
            return
        u = self.urls
        state = {
            "base": u.base,
            "websocket": u.websocket,
            "page": u.page,
            "model": u.model,
            "pid": os.getpid(),
            "port": self.port,
            "children": {child.name: child.pid for child in self.children},
        }
        write_json_atomic(self.o.data_dir / "runtime.json", state)

    def _environment(
        self, base: str, db_url: str, redis_url: str, model_url: str, queue_url: str, sqs_url: str
    ) -> None:
        env = {
            "CHATSTACK_ENVIRONMENT": "local",
            "CHATSTACK_DATABASE_URL": db_url,
            "CHATSTACK_REDIS_URL": redis_url,
            "CHATSTACK_CONNECTIONS_URL": self.internal_base,
            "CHATSTACK_QUEUE_URL": queue_url,
            "CHATSTACK_SQS_ENDPOINT_URL": sqs_url,
            "CHATSTACK_MODEL_TRANSPORT": "http",
            "CHATSTACK_MODEL_ENDPOINT": model_url.rstrip("/") + "/invocations",
            "CHATSTACK_AUTH_ISSUER": ISSUER,
            "CHATSTACK_AUTH_AUDIENCE": AUDIENCE,
            "CHATSTACK_AUTH_ALGORITHMS": "ES256",
            "CHATSTACK_AUTH_JWKS_URL": base + "/.well-known/jwks.json",
            "CHATSTACK_FLUSH_INTERVAL_MS": str(self.o.flush_interval_ms),
            # boto3 signs every call with the run's credentials (set in _serve); the stand-ins check them.
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
            "POWERTOOLS_SERVICE_NAME": "chatstack",
        }
        # What the user set wins over our defaults, except the wiring to our own stand-ins.
        for key, value in {**env, **self.o.extra_env}.items():
            if key in self.o.extra_env or key not in os.environ or key.startswith("CHATSTACK_"):
                os.environ[key] = value

    def _app(self, gateway: Any, sqs: Any, functions: dict[str, Any]) -> Any:
        from starlette.staticfiles import StaticFiles

        from lambdas.api.app import create_app

        identity = self.identity

        async def jwks(_: Request) -> JSONResponse:
            return JSONResponse(identity.jwks(), headers={"Cache-Control": "max-age=300"})

        page = _page()

        async def index(request: Request) -> HTMLResponse:
            # The page runs only its own scripts and reaches only its own origin (docs/security.md).
            host = request.headers.get("host", "")
            policy = (
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                f"connect-src 'self' ws://{host} wss://{host}; frame-ancestors 'none'; base-uri 'none'; "
                "form-action 'self'; object-src 'none'"
            )
            headers = {
                "Content-Security-Policy": policy,
                "X-Frame-Options": "DENY",
                "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            }
            return HTMLResponse(page, headers=headers)

        # The queue and @connections are internal (IAM in the cloud): only on the loopback listener,
        # behind the run's SigV4 credentials. The public listener has the socket, REST, JWKS and page.
        internal = [r for r in gateway.routes if not isinstance(r, WebSocketRoute)] + list(sqs.routes)
        routes = [
            Route("/.well-known/jwks.json", jwks),
            Route("/", index),
            # The page's scripts, styles and vendored libraries (no build step, nothing from a CDN).
            Mount("/static", app=StaticFiles(packages=[("chatstack.web", "static")])),
            Mount("/", app=create_app()),
        ]
        if self.as_deployed is not None:  # --as-deployed: Cognito stand-in; REST behind the HTTP API
            routes[-1] = Mount("/", app=self.as_deployed.rest(create_app(), functions))
            routes[:0] = self.as_deployed.routes()
        # @connections posts (the hot path) are served ahead of Starlette, behind the same guard.
        guarded_internal = guarded(gateway.posts_in_front_of(Starlette(routes=internal)), self.credentials)
        # The socket is served ahead of Starlette: a held connection keeps none of its frames alive.
        public = gateway.in_front_of(Starlette(routes=routes))
        return ByListener(public, guarded_internal, self.internal_port)

    async def serve(self, on_ready: Callable[[Urls], Awaitable[None] | None] | None = None) -> None:
        """Runs until stopped; raises SystemExit with one sentence if a child keeps dying."""
        self._main = asyncio.current_task()
        self.o.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        # With the lock held, a runtime.json here is a crashed `up`'s: gone, so no tool reads it as ours.
        (self.o.data_dir / "runtime.json").unlink(missing_ok=True)
        try:
            await self._serve(on_ready)
        except asyncio.CancelledError:
            if not self._stopping:
                raise  # stopped during start-up (Ctrl+C): a clean exit, no traceback
        finally:
            await asyncio.to_thread(self.close)
            with contextlib.suppress(OSError, ValueError):
                state = self.o.data_dir / "runtime.json"
                if json.loads(state.read_text()).get("pid") == os.getpid():
                    state.unlink()  # a runtime.json left behind is a crashed `up`'s
            self.lock.release()
        if self.failure:
            raise SystemExit(self.failure)

    async def _serve(self, on_ready: Callable[[Urls], Awaitable[None] | None] | None) -> None:
        from chatstack.local.gateway import GatewayEmulator
        from chatstack.local.lambda_host import HostPool, lambda_host_process, remote_functions
        from chatstack.local.sqs import LocalSqs

        warnings.filterwarnings("ignore", message="No application metrics to publish")
        o = self.o
        sock = _bind(o.host, o.port)
        self.port = port = sock.getsockname()[1]
        internal_sock = _bind("127.0.0.1", 0)
        self.internal_port = internal_sock.getsockname()[1]
        self.internal_base = f"http://127.0.0.1:{self.internal_port}"
        # Per-run credentials in the environment every child inherits (the model server included).
        os.environ.update(self.credentials.environment())
        self.lock.record(pid=os.getpid(), port=port)
        host_for_urls = "127.0.0.1" if o.host in ("0.0.0.0", "::") else o.host
        base = f"http://{host_for_urls}:{port}"
        if o.model_url:
            model_url = o.model_url
        else:
            self.model = model_process(o.model_backend, o.token_rate, o.model_args)
        db_url, redis_url = await self._start_data()
        if self.model is not None:
            model_url = await asyncio.to_thread(self.model.wait_ready)
            _pin_port(self.model)

        sqs_url = self.internal_base + "/sqs"
        self._environment(
            base, db_url, redis_url, model_url, LocalSqs.url_for(sqs_url, wiring.JOBS_QUEUE), sqs_url
        )

        if o.as_deployed is not None:  # --as-deployed: the templates' environment (as_deployed_mode.py)
            from chatstack.local.as_deployed import LocalUrls
            from chatstack.local.as_deployed_mode import AsDeployedMode

            self.as_deployed = AsDeployedMode(o.as_deployed, o.data_dir)
            queue_url = LocalSqs.url_for(sqs_url, wiring.JOBS_QUEUE)
            stand_ins = LocalUrls(base, db_url, redis_url, model_url, queue_url, sqs_url, self.internal_base)
            self.as_deployed.apply_environment(stand_ins)

        from lambdas.config import get_settings
        from lambdas.runtime import deps

        get_settings.cache_clear()
        d = deps()
        await asyncio.to_thread(d.db.migrate)
        # The functions run in the Lambda host process, invoked over the Lambda Invoke API.
        self.lambda_hosts = [lambda_host_process(i) for i in range(o.lambda_processes)]
        urls = [await asyncio.to_thread(host.wait_ready) for host in self.lambda_hosts]
        self.pool = HostPool(urls)
        functions = remote_functions(self.pool)
        ws_routes = {route.key: functions[route.function.name] for route in wiring.ROUTES}
        ws_authorizer: Any = functions[wiring.AUTHORIZER.name]
        if self.as_deployed is not None:  # --as-deployed
            functions = self.as_deployed.functions(self.pool)
            ws_routes, ws_authorizer = self.as_deployed.websocket(functions)
            self.as_deployed.user_pool(functions)
        sqs = LocalSqs(queue=wiring.JOBS_QUEUE, worker=functions[wiring.WORKER.name], base_url=sqs_url)
        gateway = GatewayEmulator(
            routes=ws_routes,
            authorizer=ws_authorizer,
            idle_timeout_s=o.idle_timeout_s,
            max_connection_s=o.max_connection_s,
        )
        app = self._app(gateway, sqs, functions)
        config = uvicorn.Config(
            app,
            log_level=o.log_level,
            lifespan="off",
            timeout_graceful_shutdown=5,
            # Below "info" uvicorn prints no access line, but still formats one for every request.
            access_log=o.log_level in ("trace", "debug", "info"),
            **gateway.server_options,
        )
        self.server = server = uvicorn.Server(config)
        # The page's user may chat and add documents to its own tenant (the upload button).
        token = self.identity.mint(
            user="dev", tenant="local", scopes=("chat", "documents:write"), ttl_s=12 * 3600
        )
        ws_base = base.replace("http://", "ws://")
        self.urls = Urls(
            base=base,
            websocket=f"{ws_base}{gateway.ws_path}",
            page=f"{base}/?token={token}",
            model=model_url,
            token=token,
        )
        write_private_json(
            o.data_dir / "internal.json",
            {
                "url": self.internal_base,
                "queueUrl": sqs.queue_url,
                "accessKeyId": self.credentials.access_key_id,
                "secretAccessKey": self.credentials.secret_access_key,
                "secret": self.credentials.secret,
            },
        )
        await sqs.start()
        serve_task = asyncio.create_task(server.serve(sockets=[sock, internal_sock]))
        background: list[asyncio.Task[None]] = []
        try:
            while not server.started:
                if serve_task.done():
                    await serve_task
                    return
                await asyncio.sleep(0.05)
            await asyncio.to_thread(self._warm, base)
            background = [asyncio.create_task(self._supervise()), asyncio.create_task(self._sweep(functions))]
            if self.as_deployed is not None:
                self.as_deployed.write_report(base)
            self.write_state()
            if on_ready is not None:
                result = on_ready(self.urls)
                if asyncio.iscoroutine(result):
                    await result
            await serve_task
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if not serve_task.done():  # start-up was interrupted
                server.should_exit = True
                await asyncio.gather(serve_task, return_exceptions=True)
            await sqs.stop()
            await gateway.aclose()

    async def _supervise(self) -> None:
        """Restarts dead children; when one keeps dying, `up` stops and exits non-zero."""
        from lambdas.config import get_settings

        s = get_settings()
        policy = RestartPolicy(
            limit=s.restart_limit,
            window_s=s.restart_window_s,
            probe_interval_s=s.liveness_interval_s,
            probe_failures=s.liveness_failures,
        )

        pool = self.pool
        assert pool is not None

        def on_down(child: Child) -> None:
            if child in self.lambda_hosts:
                pool.mark_down(self.lambda_hosts.index(child))

        def on_up(child: Child) -> None:
            if child in self.lambda_hosts:
                pool.replace(self.lambda_hosts.index(child), child.url)
            self.write_state()

        try:
            await Supervisor(self.children, policy, on_down, on_up).run()
        except ChildKeepsDying as exc:
            self.failure = str(exc)
            self.stop()
        except Exception as exc:  # a bug here must not leave the service running unsupervised
            log.exception("the supervisor failed")
            self.failure = f"chatstack up is stopping: its supervisor failed ({exc})."
            self.stop()

    async def _sweep(self, functions: dict[str, Any]) -> None:
        """Invokes the sweeper function (re-enqueues accepted requests that have no live generation
        and no answer) at start-up and then every CHATSTACK_SWEEP_INTERVAL_S, as a schedule would."""
        from lambdas.config import get_settings

        sweeper = functions.get("sweeper")
        if sweeper is None:
            return
        interval = get_settings().sweep_interval_s
        event: dict[str, Any] = {"minAgeS": 0}  # at start-up nothing is generating: every orphan goes
        while True:
            try:
                await asyncio.to_thread(sweeper, event)
                event = {}
            except Exception as exc:  # e.g. PostgreSQL is restarting: the next round catches up
                log.warning("sweeper invocation failed: %s", exc)
            await asyncio.sleep(interval)

    def _warm(self, base: str) -> None:
        """One deep health check, so the first request finds pools and the JWKS cache warm."""
        from lambdas.runtime import deps

        with contextlib.suppress(Exception):
            deps().verifier.jwks.get_jwk_set()
        with httpx.Client(timeout=10) as client:
            client.get(base + "/healthz")

    def close(self) -> None:
        """Stops the children: the service's own first, the data servers last."""
        stop_all([*self.lambda_hosts, *([self.model] if self.model is not None else [])])
        from lambdas.runtime import deps

        with contextlib.suppress(Exception):
            deps().db.close()
        if self.redis is not None:
            self.redis.stop()
        if self.pg is not None:
            self.pg.close()

    def stop(self) -> None:
        """Ctrl+C / SIGTERM: a running server shuts down; a start-up in progress is abandoned."""
        self._stopping = True
        if self.server is not None and self.server.started:
            self.server.should_exit = True
        elif self._main is not None:
            self._main.cancel()
