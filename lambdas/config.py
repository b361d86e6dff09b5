"""Typed settings, read once per process (cold start) from `CHATSTACK_<NAME>` environment variables.

Every field here is documented in docs/configuration.md with its default. The CDK stacks set these
variables on each function; `chatstack up` sets them for the in-process handlers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

PREFIX = "CHATSTACK_"
INTERNAL_SECRET_HEADER = "x-chatstack-internal"
# Unprefixed names honoured too, because every tool in this field reads them.
ALIASES = {"DATABASE_URL": "database_url", "REDIS_URL": "redis_url"}


class Settings(BaseModel):
    """All runtime settings. Defaults suit the local runtime; the CDK stacks override what differs."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    environment: Literal["local", "test", "cloud"] = "local"
    region: str = "us-east-1"
    service_name: str = "chatstack"

    # Data
    database_url: str = ""
    # Secrets Manager secret holding the database credentials (cloud; used when database_url is empty).
    database_secret_arn: str = ""
    # Cloud: the RDS Proxy endpoint and database name; credentials come from the secret above.
    database_host: str = ""
    # Cloud: the RDS Proxy read-only endpoint; GET /readyz (a standby region's health) reads through it.
    database_reader_host: str = ""
    # Cloud: connect as this user with RDS IAM auth tokens (through the proxy) instead of the secret.
    database_user: str = ""
    database_name: str = "chatstack"
    database_pool_max: int = Field(default=16, ge=1, le=256)
    # How long one transaction may take before its connection is cut (lambdas/adapters/db.py): a
    # server that stops answering fails requests in this time instead of holding them.
    database_deadline_s: float = Field(default=5.0, gt=0, le=300)
    redis_url: str = ""
    # Cloud: Secrets Manager secret whose JSON field "token" is the Valkey AUTH token.
    redis_auth_secret_id: str = ""

    # Automatic regional failover (a secondary region's failover function, lambdas/handlers/failover.py).
    failover_primary_region: str = ""
    failover_probe_url: str = ""  # the primary region's deep /healthz
    failover_probe_timeout_s: float = Field(default=5.0, gt=0, le=60)
    failover_global_cluster_id: str = ""
    failover_cluster_arn: str = ""  # this region's Aurora cluster, the promotion target
    failover_valkey_global_id: str = ""
    failover_valkey_group_id: str = ""  # this region's Valkey replication group

    # API Gateway @connections endpoint (https://{api}.execute-api.{region}.amazonaws.com/{stage}).
    connections_url: str = ""
    # SQS
    queue_url: str = ""
    sqs_endpoint_url: str = ""  # local stand-in only; empty in the cloud

    # Model
    model_transport: Literal["sagemaker", "http"] = "http"
    model_endpoint: str = ""  # SageMaker endpoint name, or the http(s) URL of /invocations
    model_inference_component: str = ""
    model_fallback_endpoint: str = ""  # the other region's endpoint (failover)
    model_fallback_region: str = ""
    sagemaker_endpoint_url: str = ""  # local stand-in only
    model_profile: str = "local-extractive"
    # Models offered to `options.model` and GET /v1/models: "NAME[=ENDPOINT],...", the default first;
    # a model without an endpoint is served by model_endpoint. Empty: only model_profile.
    models: str = ""
    # LoRA adapter per tenant on the default model: "TENANT=ADAPTER,...,*=ADAPTER" ("*": the rest).
    tenant_adapters: str = ""
    # Estimated cost: the profile's instance price per hour over its configured throughput, per 1K
    # output tokens; input (prefill) tokens cost this fraction of an output token (docs/configuration.md).
    model_price_per_1k_output_tokens_usd: float = Field(default=0.0, ge=0)
    # The same price per offered model where it differs (each on its own endpoint): "NAME=USD,...";
    # a model not listed costs model_price_per_1k_output_tokens_usd.
    model_prices: str = ""
    input_token_cost_ratio: float = Field(default=0.1, ge=0, le=1)
    model_max_context_tokens: int = Field(default=4096, ge=256)
    max_output_tokens: int = Field(default=512, ge=1, le=8192)
    model_timeout_s: float = Field(default=70.0, gt=0)
    # Once an answer's first bytes have come, how long the model may then fall silent before the
    # stream counts as failed (a hung model keeps its connection open).
    model_stream_idle_timeout_s: float = Field(default=25.0, gt=0)
    circuit_failure_threshold: int = Field(default=3, ge=1)
    circuit_reset_s: float = Field(default=10.0, gt=0)
    # Calls let through per reset window while half-open; the first streamed chunk closes the breaker.
    circuit_half_open_probes: int = Field(default=3, ge=1, le=100)

    # Reliability (docs/reliability.md). A generation holds a lease renewed every third of its length;
    # a dead worker's request is free again after at most one lease and is picked up again.
    generation_lease_s: float = Field(default=10.0, ge=1, le=300)
    # What a client is told to wait (retryAfter) when PostgreSQL or Redis cannot be reached.
    dependency_retry_after_s: float = Field(default=2.0, ge=0, le=300)
    # A request accepted this long ago with no live generation and no answer is enqueued again.
    orphan_after_s: float = Field(default=30.0, ge=1, le=86_400)

    # Local runtime (`chatstack up`): how often it invokes the sweeper function; a child process that
    # dies more than restart_limit times within restart_window_s makes `up` exit non-zero.
    sweep_interval_s: float = Field(default=30.0, ge=0.1, le=86_400)
    restart_limit: int = Field(default=5, ge=0, le=1000)
    restart_window_s: float = Field(default=60.0, gt=0, le=86_400)
    # A child that is alive but answers no probe for liveness_failures probes in a row, one every
    # liveness_interval_s (each given that long to answer), is killed and restarted (0: never probed).
    liveness_interval_s: float = Field(default=5.0, gt=0, le=3600)
    liveness_failures: int = Field(default=6, ge=0, le=1000)
    # Function timeouts other than the wiring's (or, with --as-deployed, the templates'), for the local
    # Lambda hosts only: "NAME=SECONDS,...", e.g. a test's short worker timeout.
    function_timeouts: str = ""

    # Streaming and memory
    # Delta pacing (lambdas/core/deltas.py): the gap between deltas grows from flush_interval_ms to
    # flush_max_interval_ms over flush_ramp_ms; a sentence end may go after flush_early_share of it.
    flush_interval_ms: int = Field(default=100, ge=0, le=5000)
    flush_max_interval_ms: int = Field(default=500, ge=0, le=10_000)
    flush_ramp_ms: int = Field(default=1000, ge=0, le=60_000)
    flush_early_share: float = Field(default=0.7, gt=0, le=1)
    # Text per delta, JSON-escaped UTF-8; the rest of the 32 KB frame is the envelope's.
    delta_max_bytes: int = Field(default=16_384, ge=1024, le=30_000)
    delta_ttl_s: int = Field(default=900, ge=10)
    history_turns: int = Field(default=20, ge=0, le=500)
    hot_window_ttl_s: int = Field(default=3600, ge=10)
    idempotency_ttl_s: int = Field(default=86_400, ge=60)
    system_prompt: str = (
        "You are a helpful assistant. Answer from the provided context when it is relevant and cite "
        "passages as [n]."
    )

    # Identity
    auth_issuer: str = ""
    auth_jwks_url: str = ""
    auth_audience: str = "chatstack"
    auth_algorithms: str = "RS256,ES256"
    auth_tenant_claim: str = "tenant"
    auth_user_claim: str = "sub"
    auth_scopes_claim: str = "scope"
    auth_leeway_s: int = Field(default=30, ge=0, le=300)
    auth_jwks_ttl_s: int = Field(default=600, ge=0)
    # The longest lifetime (exp - iat) a token may have; a longer one is refused however well signed.
    auth_max_token_lifetime_s: int = Field(default=86_400, ge=60, le=365 * 86_400)

    # Rate limits and quotas (docs/identity.md). 0 means "no limit". Per-minute limits are token buckets
    # (a burst of the whole minute's allowance, refilled evenly); quotas are calendar periods in UTC.
    # Tenants override all but the per-IP limit through PUT /v1/limits.
    limits_enabled: bool = True
    limit_connections_per_ip_per_minute: int = Field(default=600, ge=0, le=1_000_000)
    limit_messages_per_connection_per_minute: int = Field(default=30, ge=0, le=1_000_000)
    limit_messages_per_user_per_minute: int = Field(default=60, ge=0, le=1_000_000)
    limit_tokens_per_user_per_minute: int = Field(default=50_000, ge=0, le=10**12)
    limit_tokens_per_tenant_per_minute: int = Field(default=1_000_000, ge=0, le=10**12)
    quota_tokens_per_user_per_day: int = Field(default=1_000_000, ge=0, le=10**12)
    quota_tokens_per_user_per_month: int = Field(default=10_000_000, ge=0, le=10**12)
    quota_tokens_per_tenant_per_day: int = Field(default=0, ge=0, le=10**12)
    quota_tokens_per_tenant_per_month: int = Field(default=0, ge=0, le=10**12)
    budget_usd_per_tenant_per_month: float = Field(default=0.0, ge=0, le=1e9)
    # How long the tenant's month-to-date spend, summed from the usage ledger, is reused before re-reading.
    budget_refresh_s: int = Field(default=60, ge=1, le=3600)
    # How long a tenant's limits are cached in Redis; PUT /v1/limits drops the cache at once.
    limits_cache_s: int = Field(default=60, ge=1, le=3600)
    # Answers one user may have queued or streaming at once (0: no cap); each holds a reservation.
    limit_answers_in_flight_per_user: int = Field(default=4, ge=0, le=1000)
    # How long an admitted message's reservation lives if its answer never settles (a dead worker).
    limits_reservation_ttl_s: int = Field(default=900, ge=30, le=86_400)
    # Local: proxies (IPs/CIDRs, comma-separated) whose X-Forwarded-For names the client; empty: the
    # socket peer is the client. In the cloud the source IP is API Gateway's requestContext.
    trusted_proxies: str = ""
    # Local only: the per-run secret `chatstack up` gives its processes; our clients send it in
    # INTERNAL_SECRET_HEADER to the model server and the Lambda hosts, which answer nobody else.
    internal_secret: str = ""

    # Retrieval
    rag_enabled: bool = True
    rag_top_k: int = Field(default=4, ge=0, le=50)
    rag_min_score: float = Field(default=0.3, ge=-1.0, le=1.0)
    # Keyword + vector, fused by rank; its keyword half grows with the corpus (docs/benchmarks.md).
    rag_hybrid: bool = True
    rag_context_tokens: int = Field(default=1200, ge=0)
    vector_store: Literal["pgvector", "opensearch"] = "pgvector"
    opensearch_endpoint: str = ""
    embeddings: Literal["local", "sagemaker"] = "local"
    embedding_endpoint: str = ""

    @field_validator("auth_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: str) -> str:
        allowed = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}
        algs = [a.strip() for a in value.split(",") if a.strip()]
        bad = [a for a in algs if a not in allowed]
        if not algs or bad:
            raise ValueError(f"only asymmetric JWT algorithms are accepted, not {bad or 'none'}")
        return ",".join(algs)

    @field_validator("models", "tenant_adapters")
    @classmethod
    def _name_value_list(cls, value: str) -> str:
        for item in (part.strip() for part in value.split(",")):
            if item and not item.partition("=")[0].strip():
                raise ValueError(f"{item!r} has no name; write NAME=VALUE items separated by commas")
        return value

    @field_validator("function_timeouts")
    @classmethod
    def _function_timeouts(cls, value: str) -> str:
        parse_function_timeouts(value)
        return value

    @field_validator("model_prices")
    @classmethod
    def _prices_of_offered_models(cls, value: str, info: ValidationInfo) -> str:
        offered = _offered_names(info.data.get("models", ""), info.data.get("model_profile", ""))
        unknown = [name for name in parse_model_prices(value) if name not in offered]
        if unknown:
            raise ValueError(
                f"it names {', '.join(unknown)}, which this deployment does not offer "
                f"(models: {', '.join(offered)})"
            )
        return value

    def offered_model_names(self) -> list[str]:
        """The names of the models this deployment offers, the default first (lambdas.services.models)."""
        return _offered_names(self.models, self.model_profile)

    def price_per_1k_output_tokens(self, model: str | None) -> float:
        """The estimated cost of 1,000 output tokens of `model` (None: the default model)."""
        default = self.model_price_per_1k_output_tokens_usd
        if not self.model_prices:
            return default
        return parse_model_prices(self.model_prices).get(model or self.offered_model_names()[0], default)

    @property
    def algorithms(self) -> list[str]:
        return self.auth_algorithms.split(",")


def _name_numbers(value: str, accept: Callable[[float], bool], form: str) -> dict[str, float]:
    """"NAME=NUMBER,..." as {name: number}; ValueError naming `form` for an item that is not one, or
    whose number `accept` refuses."""
    numbers: dict[str, float] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, _, number = (text.strip() for text in item.partition("="))
        try:
            numbers[name] = float(number)
        except ValueError:
            numbers[name] = float("nan")
        if not name or not accept(numbers[name]):
            raise ValueError(f"{item!r} is not {form}")
    return numbers


def parse_function_timeouts(value: str) -> dict[str, float]:
    """`function_timeouts` as {name: seconds}; raises ValueError for a malformed item."""
    return _name_numbers(value, lambda s: 0 < s <= 900, "NAME=SECONDS with 0 < SECONDS <= 900")


@lru_cache(maxsize=16)  # read for every message's reservation and every answer's cost
def parse_model_prices(value: str) -> dict[str, float]:
    """`model_prices` as {model: USD per 1,000 output tokens}; raises ValueError for a malformed item."""
    return _name_numbers(value, lambda usd: 0 <= usd < float("inf"), "NAME=USD with USD a number, 0 or more")


def _offered_names(models: str, model_profile: str) -> list[str]:
    names = [item.partition("=")[0].strip() for item in models.split(",") if item.strip()]
    return names or [model_profile]


def settings_from_env(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for name, field in ALIASES.items():
        if env.get(name):
            values[field] = env[name]
    for key, value in env.items():
        if key.startswith(PREFIX):
            values[key[len(PREFIX) :].lower()] = value
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = PREFIX + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise SystemExit(f"Invalid setting {name}: {first['msg']}.") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once, like a Lambda cold start)."""
    return settings_from_env()
