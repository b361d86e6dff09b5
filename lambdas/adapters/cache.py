"""Redis: the hot path. Connection registry, idempotency records, the recent-turns window, per-request
delta streams for resume, watchers and cancel flags.

Losing Redis loses speed, never data: every record here is either rebuilt from PostgreSQL or only
matters for the few minutes a request is streaming.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import NoScriptError
from redis.retry import Retry

from lambdas.adapters import sockets

P = "cs:"  # key prefix, so one Redis can be shared with other applications
SOCKET_TIMEOUT_S = 2.0


class _KernelTimeouts:
    """A redis-py connection whose reads and writes time out in the kernel (sockets.py): one GIL
    hand-off per read instead of two. redis-py sees a blocking socket (`socket_timeout` None, which
    its parser restores after each non-blocking check); a call the kernel timed out surfaces as
    redis.ConnectionError, as a reset connection does, instead of redis.TimeoutError."""

    def __init__(self, *args: Any, socket_timeout: float | None = SOCKET_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(*args, socket_timeout=None, **kwargs)  # type: ignore[call-arg]
        self.kernel_timeout_s = socket_timeout or SOCKET_TIMEOUT_S

    def _connect(self) -> Any:
        sock = super()._connect()  # type: ignore[misc]
        sockets.set_kernel_timeouts(sock, self.kernel_timeout_s)
        return sock


class _TcpConnection(_KernelTimeouts, redis.Connection):
    pass


class _UnixConnection(_KernelTimeouts, redis.UnixDomainSocketConnection):
    pass


_KERNEL_TIMEOUT_CLASSES: dict[type, type] = {
    redis.Connection: _TcpConnection,
    redis.UnixDomainSocketConnection: _UnixConnection,
}


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What sendMessage decided for one requestId; the idempotency record."""

    tenant_id: str
    user_id: str
    conversation_id: str = ""
    message_id: str = ""
    answer_id: str = ""
    state: str = "pending"  # pending -> accepted


@dataclass(frozen=True, slots=True)
class GenerationStart:
    """What a generation reads from Redis once it holds the lease (one round trip): an answer kept
    for it, a cancel, the frames an earlier attempt streamed, and the conversation's recent turns."""

    kept: dict[str, Any] | None
    cancelled: bool
    frames: list[str] | None  # None: no stream exists
    history: list[dict[str, Any]] | None  # None: not cached


@dataclass(frozen=True, slots=True)
class Publish:
    """What one publish returned: the connections watching and whether a cancel was asked."""

    watchers: list[str]
    cancelled: bool
    # Another worker holds the request's generation lease: this publisher was taken over (it stalled
    # past its lease) and its frame was not published.
    superseded: bool = False


def _k_conn(cid: str) -> str:
    return f"{P}conn:{cid}"


def _k_req(rid: str) -> str:
    return f"{P}req:{rid}"


def _k_watch(rid: str) -> str:
    return f"{P}watch:{rid}"


def _k_stream(rid: str) -> str:
    return f"{P}deltas:{rid}"


def _k_cancel(rid: str) -> str:
    return f"{P}cancel:{rid}"


def _k_claim(rid: str) -> str:
    return f"{P}claim:{rid}"


def _k_hist(conversation_id: str) -> str:
    return f"{P}hist:{conversation_id}"


def _k_requeue(rid: str) -> str:
    return f"{P}requeue:{rid}"


def _k_outcome(rid: str) -> str:
    return f"{P}outcome:{rid}"


def _k_breaker(endpoint: str) -> str:
    return f"{P}breaker:{endpoint}"


def _k_generation(rid: str) -> str:
    return f"{P}gen:{rid}"


# How long the owner of a request's latest generation is remembered after it took the lease: a worker
# that stalls (and is taken over) for less than this publishes nothing once it wakes.
GENERATION_MARK_TTL_S = 3600


def _evalsha(pipe: Any, script: Any, keys: list[str], args: list[Any]) -> None:
    pipe.evalsha(script.sha, len(keys), *keys, *args)


def _claim_keys(request_id: str) -> list[str]:
    # The lease, the mark of its latest owner, and the re-enqueue mark, which the claim consumes: from
    # here the generation is live (its lease says so), and once it ends a repeat may enqueue it again.
    return [_k_claim(request_id), _k_generation(request_id), _k_requeue(request_id)]


def _claim_args(owner: str, lease_s: float) -> list[Any]:
    return [owner, int(lease_s * 1000), GENERATION_MARK_TTL_S]


# Replies read both alone and in `claim_generation_and_start`'s pipeline, parsed one way.
def _outcome(raw: Any) -> dict[str, Any] | None:
    return cast(dict[str, Any], json.loads(raw)) if raw else None


def _frames(entries: list[tuple[str, dict[str, str]]], exists: Any) -> list[str] | None:
    """The frames of a stream's entries; None when the stream does not exist."""
    return [fields["f"] for _, fields in entries] if exists else None


def _turns(items: list[str], exists: Any) -> list[dict[str, Any]] | None:
    """The history window's turns without its "" marker (known empty); None when not cached."""
    return [json.loads(item) for item in items if item != ""] if exists else None


class Cache:
    """Typed operations over one redis-py client (thread-safe, pooled)."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._append_if_exists = client.register_script(_APPEND_IF_EXISTS)
        self._renew = client.register_script(_RENEW_IF_OWNER)
        self._release = client.register_script(_DELETE_IF_OWNER)
        self._publish_if_owner = client.register_script(_PUBLISH_IF_OWNER)
        self._claim = client.register_script(_CLAIM_GENERATION)
        self._breaker_fail = client.register_script(_BREAKER_FAILURE)
        self._breaker_probe = client.register_script(_BREAKER_PROBE)

    @classmethod
    def from_url(cls, url: str) -> Cache:
        if not url:
            raise ValueError("No Redis URL: set CHATSTACK_REDIS_URL or REDIS_URL.")
        # A blocking pool: under a burst, threads wait for a connection instead of failing; short
        # connect and socket timeouts, so a dead Redis fails a request in about a second (the caller
        # answers with an error frame) instead of hanging it. redis-py reconnects by itself.
        options: dict[str, Any] = {
            "max_connections": 64,
            "timeout": 2,
            "decode_responses": True,
            "health_check_interval": 30,
            "socket_connect_timeout": 1,
            "socket_timeout": SOCKET_TIMEOUT_S,
            "retry_on_timeout": False,
            **parse_url(url),  # type: ignore[no-untyped-call]  # the URL (its query may set timeouts) wins
        }
        connection_class = options.pop("connection_class", redis.Connection)
        if sockets.SUPPORTED:  # TLS (rediss://, ElastiCache in the cloud) keeps Python's timeouts
            connection_class = _KERNEL_TIMEOUT_CLASSES.get(connection_class, connection_class)
        pool = redis.BlockingConnectionPool(connection_class=connection_class, **options)  # type: ignore[no-untyped-call]
        # One quick retry (a connection dropped by a restarted server), not redis-py's default of three
        # with backoff: a caller waits about a second at most before it can answer with an error frame.
        return cls(redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 1)))

    def ping(self) -> bool:
        return bool(self.r.ping())

    # ---- connection registry -----------------------------------------------------------------
    def register_connection(self, connection_id: str, *, tenant_id: str, user_id: str, ttl_s: int) -> None:
        key = _k_conn(connection_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(key, mapping={"tenant": tenant_id, "user": user_id})
        pipe.expire(key, ttl_s)
        pipe.execute()

    def connection(self, connection_id: str) -> dict[str, str]:
        return cast(dict[str, str], self.r.hgetall(_k_conn(connection_id)))

    def drop_connection(self, connection_id: str) -> None:
        self.r.delete(_k_conn(connection_id))

    # ---- idempotency ---------------------------------------------------------------------------
    def claim_request(self, request_id: str, record: RequestRecord, ttl_s: int) -> RequestRecord | None:
        """Store the record if this requestId is new; otherwise return the existing record."""
        key = _k_req(request_id)
        if self.r.set(key, json.dumps(asdict(record)), nx=True, ex=ttl_s):
            return None
        raw = self.r.get(key)
        if raw is None:  # expired between the two calls: treat as new
            return self.claim_request(request_id, record, ttl_s)
        return RequestRecord(**json.loads(cast(str, raw)))

    def update_request(self, request_id: str, record: RequestRecord, ttl_s: int) -> None:
        self.r.set(_k_req(request_id), json.dumps(asdict(record)), ex=ttl_s)

    def request(self, request_id: str) -> RequestRecord | None:
        raw = self.r.get(_k_req(request_id))
        return RequestRecord(**json.loads(cast(str, raw))) if raw else None

    def forget_request(self, request_id: str) -> None:
        self.r.delete(_k_req(request_id))

    # ---- generation leases and cancel flags ---------------------------------------------------
    def claim_generation(self, request_id: str, owner: str, lease_s: float) -> bool:
        """Take the generation lease of a request; False while another owner holds it. The lease is
        short and renewed while the generation runs, so a dead worker's request is free in seconds."""
        return bool(self._claim(keys=_claim_keys(request_id), args=_claim_args(owner, lease_s)))

    def _pipeline(self, build: Callable[[Any], None]) -> list[Any]:
        """Run the commands `build` adds to a pipeline (not a transaction), scripts by EVALSHA alone:
        a Script object in a pipeline makes redis-py ask SCRIPT EXISTS first, a round trip more for
        every pipeline. A Redis that lost its scripts (restarted) answers NOSCRIPT: they are loaded
        and the pipeline runs again (what ran of it the first time was reads, or refused)."""
        for attempt in (1, 2):
            pipe = self.r.pipeline(transaction=False)
            build(pipe)
            try:
                return pipe.execute()
            except NoScriptError:
                if attempt == 2:
                    raise
                for script in (self._claim, self._renew):
                    self.r.script_load(script.script)
        raise AssertionError("unreachable")

    def mark_key_revoked(self, key_id: str, *, ttl_s: int) -> None:
        self.r.set(f"{P}revoked-key:{key_id}", "1", ex=ttl_s)

    def key_revoked(self, key_id: str) -> bool:
        return bool(self.r.exists(f"{P}revoked-key:{key_id}"))

    def generation_owner(self, request_id: str) -> str | None:
        return cast(str | None, self.r.get(_k_claim(request_id)))

    def latest_generation(self, request_id: str) -> str | None:
        """The owner that took the request's lease last (kept after it ends, GENERATION_MARK_TTL_S)."""
        return cast(str | None, self.r.get(_k_generation(request_id)))

    def renew_generations(self, leases: dict[str, str], lease_s: float) -> list[str]:
        """Extend the leases {request_id: owner} still held by their owner (or take them again when
        Redis forgot them); returns the ones another owner holds now."""
        if not leases:
            return []
        def build(pipe: Any) -> None:
            for rid, owner in leases.items():
                _evalsha(pipe, self._renew, [_k_claim(rid)], [owner, int(lease_s * 1000)])

        results = self._pipeline(build)
        return [rid for rid, ok in zip(leases, results, strict=True) if not ok]

    def release_generation(self, request_id: str, owner: str) -> None:
        self._release(keys=[_k_claim(request_id)], args=[owner])

    def mark_requeued(self, request_id: str, ttl_s: float) -> bool:
        """True for the first caller in `ttl_s`: one re-enqueue of an orphaned request at a time. The
        generation that takes the request consumes the mark."""
        return bool(self.r.set(_k_requeue(request_id), "1", nx=True, px=int(ttl_s * 1000)))

    def generation_pending(self, request_id: str) -> bool:
        """A generation of the request runs (its lease is held) or is queued (enqueued again, not yet
        taken): one round trip."""
        return bool(self.r.exists(_k_claim(request_id), _k_requeue(request_id)))

    def keep_outcome(self, request_id: str, outcome: dict[str, Any], ttl_s: int) -> None:
        """An answer that could not be stored (PostgreSQL down), kept for the redelivery to store."""
        self.r.set(_k_outcome(request_id), json.dumps(outcome), ex=ttl_s)

    def kept_outcome(self, request_id: str) -> dict[str, Any] | None:
        return _outcome(self.r.get(_k_outcome(request_id)))

    def drop_outcome(self, request_id: str) -> None:
        self.r.delete(_k_outcome(request_id))

    def claim_generation_and_start(
        self, request_id: str, owner: str, lease_s: float, conversation_id: str
    ) -> GenerationStart | None:
        """`claim_generation`, then (when it took the lease) `kept_outcome`, `is_cancelled`, `replay`
        and `history`, all in one pipeline: None while another owner holds the lease."""
        def build(pipe: Any) -> None:
            _evalsha(pipe, self._claim, _claim_keys(request_id), _claim_args(owner, lease_s))
            pipe.get(_k_outcome(request_id))
            pipe.exists(_k_cancel(request_id))
            pipe.xrange(_k_stream(request_id))
            pipe.exists(_k_stream(request_id))
            pipe.exists(_k_hist(conversation_id))
            pipe.lrange(_k_hist(conversation_id), 0, -1)

        claimed, kept, cancelled, entries, streamed, cached, turns = self._pipeline(build)
        if not claimed:  # what was read belongs to the holder's generation
            return None
        return GenerationStart(
            kept=_outcome(kept),
            cancelled=bool(cancelled),
            frames=_frames(entries, streamed),
            history=_turns(turns, cached),
        )

    def request_cancel(self, request_id: str, ttl_s: int) -> None:
        self.r.set(_k_cancel(request_id), "1", ex=ttl_s)

    def is_cancelled(self, request_id: str) -> bool:
        return bool(self.r.exists(_k_cancel(request_id)))

    # ---- delta streams and watchers ------------------------------------------------------------
    def watch(self, request_id: str, connection_id: str, ttl_s: int) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.sadd(_k_watch(request_id), connection_id)
        pipe.expire(_k_watch(request_id), ttl_s)
        pipe.execute()

    def watchers(self, request_id: str) -> list[str]:
        return sorted(cast(set[str], self.r.smembers(_k_watch(request_id))))

    def unwatch(self, request_id: str, connection_id: str) -> None:
        self.r.srem(_k_watch(request_id), connection_id)

    def publish(self, request_id: str, frame: str, ttl_s: int, *, owner: str = "") -> Publish:
        """Append a frame to the request's stream and read watchers and the cancel flag: one round trip.
        With `owner` (a generation's), only while no other owner has taken the request's generation
        lease since: a worker that stalled past its lease and was taken over publishes nothing more,
        even once the takeover has ended (a mark a restarted Redis forgot does not refuse)."""
        if owner:
            keys = [_k_stream(request_id), _k_watch(request_id), _k_cancel(request_id),
                    _k_generation(request_id)]
            published, watched, flag = self._publish_if_owner(keys=keys, args=[frame, ttl_s, owner])
            if not published:
                return Publish(watchers=[], cancelled=False, superseded=True)
            return Publish(watchers=sorted(watched), cancelled=bool(flag))
        pipe = self.r.pipeline(transaction=False)
        pipe.xadd(_k_stream(request_id), {"f": frame})
        pipe.expire(_k_stream(request_id), ttl_s)
        pipe.smembers(_k_watch(request_id))
        pipe.exists(_k_cancel(request_id))
        _, _, watchers, cancelled = pipe.execute()
        return Publish(watchers=sorted(watchers), cancelled=bool(cancelled))

    def replay(self, request_id: str) -> list[str] | None:
        """Every frame published for the request, in order; None when no stream exists."""
        entries = cast(list[tuple[str, dict[str, str]]], self.r.xrange(_k_stream(request_id)))
        return _frames(entries, bool(entries) or self.r.exists(_k_stream(request_id)))

    # ---- recent-turns window ------------------------------------------------------------------
    def history(self, conversation_id: str) -> list[dict[str, Any]] | None:
        key = _k_hist(conversation_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(key)
        pipe.lrange(key, 0, -1)
        exists, items = pipe.execute()
        return _turns(items, exists)

    def set_history(
        self, conversation_id: str, turns: list[dict[str, Any]], *, keep: int, ttl_s: int
    ) -> None:
        key = _k_hist(conversation_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(key)
        # An empty marker keeps "known empty" apart from "not cached".
        kept = [json.dumps(t) for t in turns[-keep:]] if keep else []
        pipe.rpush(key, "", *kept)
        pipe.expire(key, ttl_s)
        pipe.execute()

    def append_history(
        self, conversation_id: str, turns: list[dict[str, Any]], *, keep: int, ttl_s: int
    ) -> None:
        """Append turns only if the window is cached (else the next reader rebuilds it from the DB)."""
        key = _k_hist(conversation_id)
        self._append_if_exists(keys=[key], args=[keep, ttl_s, *[json.dumps(t) for t in turns]])

    def drop_history(self, conversation_id: str) -> None:
        self.r.delete(_k_hist(conversation_id))

    # ---- circuit breakers shared by every worker process -------------------------------------
    def breaker_state(self, endpoint: str) -> dict[str, str]:
        return cast(dict[str, str], self.r.hgetall(_k_breaker(endpoint)))

    def breaker_failure(self, endpoint: str, *, threshold: int, now: float, ttl_s: int) -> int:
        """Count one failure; open the breaker (stamp `opened`) at `threshold` or while half-open."""
        return int(self._breaker_fail(keys=[_k_breaker(endpoint)], args=[threshold, repr(now), ttl_s]))

    def breaker_success(self, endpoint: str) -> None:
        self.r.delete(_k_breaker(endpoint))

    def breaker_probe(self, endpoint: str, *, now: float, reset_s: float, probes: int) -> bool:
        """In half-open, let at most `probes` calls through per `reset_s` window."""
        return bool(self._breaker_probe(keys=[_k_breaker(endpoint)], args=[repr(now), reset_s, probes]))


# Append to the window only when it exists, keep the marker plus the last `keep` turns.
_APPEND_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
local keep = tonumber(ARGV[1])
local len = redis.call('LLEN', KEYS[1])
if len - 1 > keep then
  local turns = redis.call('LRANGE', KEYS[1], len - keep, -1)
  redis.call('DEL', KEYS[1])
  redis.call('RPUSH', KEYS[1], '')
  if #turns > 0 then redis.call('RPUSH', KEYS[1], unpack(turns)) end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

# Renew a lease its owner holds; take it again when it is gone (a restarted Redis forgot it) so that
# recovery does not start a second generation beside a live one. Another owner's lease is lost.
_RENEW_IF_OWNER = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_CLAIM_GENERATION = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
  redis.call('DEL', KEYS[3])
  return 1
end
return 0
"""

_PUBLISH_IF_OWNER = """
local holder = redis.call('GET', KEYS[4])
if holder and holder ~= ARGV[3] then return {0, {}, 0} end
redis.call('XADD', KEYS[1], '*', 'f', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {1, redis.call('SMEMBERS', KEYS[2]), redis.call('EXISTS', KEYS[3])}
"""

_DELETE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# failures, opened (time it opened), probe_window (start), probes (in this window)
_BREAKER_FAILURE = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if redis.call('HEXISTS', KEYS[1], 'opened') == 1 or failures >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'opened', ARGV[2])
  redis.call('HDEL', KEYS[1], 'probe_window', 'probes')
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return failures
"""

_BREAKER_PROBE = """
local now, reset, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window = tonumber(redis.call('HGET', KEYS[1], 'probe_window') or '0')
if now - window >= reset then
  redis.call('HSET', KEYS[1], 'probe_window', ARGV[1], 'probes', 1)
  return 1
end
local used = tonumber(redis.call('HGET', KEYS[1], 'probes') or '0')
if used < limit then
  redis.call('HINCRBY', KEYS[1], 'probes', 1)
  return 1
end
return 0
"""
