"""The one wiring module: routes, handlers, queues and function names.

Both the CDK stacks (cdk/) and the local runtime (chatstack/local/) read this module, so the route
table deployed to API Gateway and the one the local gateway emulator serves can never drift.
Handlers are named by dotted path ("module:function") so that reading the table imports no handler
code (CDK synth must not import redis or psycopg).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# API Gateway WebSocket route selection: `$request.body.action`.
ROUTE_SELECTION_EXPRESSION: Final = "$request.body.action"
# The WebSocket stage (API Gateway) and the local emulator's stage name.
STAGE_NAME: Final = "v1"


@dataclass(frozen=True, slots=True)
class Function:
    """One Lambda function: its logical name, its handler and its sizing."""

    name: str
    handler: str  # "package.module:function"
    memory_mb: int = 512
    timeout_s: int = 29
    description: str = ""

    @property
    def module(self) -> str:
        return self.handler.split(":", 1)[0]

    @property
    def attribute(self) -> str:
        return self.handler.split(":", 1)[1]


@dataclass(frozen=True, slots=True)
class Route:
    """A WebSocket route bound to a function. Only `$connect` carries the authorizer."""

    key: str
    function: Function


AUTHORIZER = Function(
    "authorizer",
    "lambdas.handlers.authorizer:handler",
    256,
    10,
    "REQUEST authorizer on $connect: verifies a JWT or an API key, returns a small identity context",
)
CONNECT = Function("connect", "lambdas.handlers.connect:handler", 256, 10, "Registers the connection")
DISCONNECT = Function("disconnect", "lambdas.handlers.disconnect:handler", 256, 10, "Cleans the registry")
SEND_MESSAGE = Function(
    "send_message",
    "lambdas.handlers.send_message:handler",
    512,
    29,
    "Validates, limits, persists the user message, acks and enqueues the generation job",
)
RESUME = Function(
    "resume", "lambdas.handlers.resume:handler", 256, 29, "Replays missed deltas, then follows live"
)
CANCEL = Function("cancel", "lambdas.handlers.cancel:handler", 256, 10, "Stops a running generation")
PING = Function("ping", "lambdas.handlers.ping:handler", 128, 5, "Heartbeat")
DEFAULT = Function(
    "default", "lambdas.handlers.default:handler", 128, 5, "Unknown actions and non-JSON frames"
)
WORKER = Function(
    "worker",
    "lambdas.handlers.worker:handler",
    1024,
    900,
    "Consumes generation jobs in batches, streams answers back to the connections",
)
REST_API = Function(
    "rest_api", "lambdas.handlers.rest:handler", 1024, 29, "The REST API (FastAPI behind Mangum)"
)
HTTP_AUTHORIZER = Function(
    "http_authorizer",
    "lambdas.handlers.http_authorizer:handler",
    256,
    10,
    "HTTP API Lambda authorizer (payload 2.0, simple responses): Bearer JWT, Bearer API key or x-api-key",
)
FAILOVER = Function(
    "failover",
    "lambdas.handlers.failover:handler",
    256,
    60,
    "Secondary regions: probes the primary's health every minute; on its alarm promotes this region",
)
PRE_TOKEN = Function(
    "pre_token",
    "lambdas.handlers.pre_token:handler",
    128,
    5,
    "Cognito Pre Token Generation (V2_0): writes the tenant and scope claims the service reads",
)
SWEEPER = Function(
    "sweeper",
    "lambdas.handlers.sweeper:handler",
    256,
    60,
    "Enqueues again accepted requests whose generation died (no live lease, no answer)",
)
# How often the sweeper runs (an EventBridge schedule in the cloud, the runtime's timer locally).
SWEEP_INTERVAL_S: Final = 60

ROUTES: Final[tuple[Route, ...]] = (
    Route("$connect", CONNECT),
    Route("$disconnect", DISCONNECT),
    Route("$default", DEFAULT),
    Route("sendMessage", SEND_MESSAGE),
    Route("resume", RESUME),
    Route("cancel", CANCEL),
    Route("ping", PING),
)
ROUTES_BY_KEY: Final = {route.key: route for route in ROUTES}

# Where the REQUEST authorizer reads its credentials (API Gateway identity sources). Browsers cannot
# set headers on `new WebSocket()`, so they pass `?token=`; services send `x-api-key`.
AUTHORIZER_IDENTITY_SOURCES: Final = ("route.request.querystring.token", "route.request.header.x-api-key")

FUNCTIONS: Final[tuple[Function, ...]] = (
    AUTHORIZER,
    CONNECT,
    DISCONNECT,
    SEND_MESSAGE,
    RESUME,
    CANCEL,
    PING,
    DEFAULT,
    WORKER,
    REST_API,
    HTTP_AUTHORIZER,
    PRE_TOKEN,
    FAILOVER,
    SWEEPER,
)


@dataclass(frozen=True, slots=True)
class Queue:
    """The generation queue: SQS FIFO, one message group per conversation."""

    name: str
    dead_letter_name: str
    max_receive_count: int
    visibility_timeout_s: int
    batch_size: int
    max_concurrency: int


JOBS_QUEUE: Final = Queue(
    name="chatstack-jobs.fifo",
    dead_letter_name="chatstack-jobs-dlq.fifo",
    max_receive_count=3,
    # SQS guidance: at least six times the function timeout for event source mappings.
    visibility_timeout_s=6 * WORKER.timeout_s,
    batch_size=10,
    max_concurrency=200,
)

# API Gateway WebSocket limits the local emulator enforces (API Gateway quotas page).
MAX_MESSAGE_BYTES: Final = 128 * 1024
MAX_FRAME_BYTES: Final = 32 * 1024
IDLE_TIMEOUT_S: Final = 10 * 60
MAX_CONNECTION_S: Final = 2 * 60 * 60
INTEGRATION_TIMEOUT_S: Final = 29
