"""Rate-limit buckets and quota counters in Redis, checked and spent atomically by Lua scripts.

One script call checks every rule of a request and spends from all of them only when all admit, so
concurrent requests can never overshoot a limit: Redis runs a script to completion before the next.
The clock is passed in (milliseconds), which lets tests move time across a period boundary.

Buckets are token buckets: `capacity` units, refilled evenly over `window_ms`. A spend may drive a bucket
below zero (tokens are only known after an answer); it then admits nothing until it refills above `need`.
Quota counters are plain numbers under keys that name their period, created by `seed` from the usage
ledger and expiring after the period, so a new period starts from zero on its own.

Reservations close the gap between admission and the answer's bill: an admitted request reserves its
worst case from every counter (`<counter>:res` holds the sum of live reservations) and a counter admits
only while used + reserved + this request's reservation fits. The request's hold (its reservations and
one slot among its user's answers in flight) is keyed by its requestId and released when the answer is
settled, or by the next admission of the tenant once its TTL has passed (a worker that died).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis


@dataclass(frozen=True, slots=True)
class Bucket:
    key: str
    capacity: int
    window_ms: int
    cost: int  # units spent when admitted (may be 0: then only `need` is checked)
    need: int = 1  # units that must be available to admit


@dataclass(frozen=True, slots=True)
class Counter:
    key: str
    limit: float  # admits while the counter (plus what is reserved) stays within this
    reserve: float = 0  # held for the request until it settles; 0: only "below the limit" is checked


@dataclass(frozen=True, slots=True)
class Hold:
    """What an admitted request holds until it settles: its reservations and an answer-in-flight slot."""

    request_id: str
    ledger_key: str  # the tenant's reservations by expiry (its hash tag puts them on the counters' slot)
    in_flight_key: str  # the user's answers in flight (a sorted set of request ids by expiry)
    in_flight_cap: int  # 0: no cap
    ttl_ms: int  # a worker that dies never settles: the hold then expires by itself


@dataclass(frozen=True, slots=True)
class Verdict:
    admitted: bool
    refused: int = -1  # index of the refusing rule: buckets, then counters, then the in-flight cap
    retry_after_ms: int = 0
    missing: tuple[int, ...] = ()  # counters whose key is absent: seed them, then ask again
    # Why a counter refused: "used" (nothing left), "short" (less left than this request may use) or
    # "held" (it would fit, but not beside the reservations of the answers in progress).
    counter_state: str = "used"


def reserved_key(counter_key: str) -> str:
    """The sum of the live reservations against one counter."""
    return counter_key + ":res"


def hold_key(ledger_key: str, request_id: str) -> str:
    """One request's reservations: counter key -> amount, and the in-flight set it holds a slot in."""
    return f"{ledger_key}:{request_id}"


class LimitStore:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._take = client.register_script(_TAKE)
        self._spend = client.register_script(_SPEND)
        self._release = client.register_script(_RELEASE)

    def take(
        self, buckets: list[Bucket], counters: list[Counter], now_ms: int, hold: Hold | None = None
    ) -> Verdict:
        """Check every rule; if all admit, spend from the buckets and (with `hold`) reserve from the
        counters and take an in-flight slot, all in one script."""
        if not buckets and not counters and hold is None:
            return Verdict(admitted=True)
        args: list[int | float | str] = [now_ms, len(buckets), len(counters)]
        args += [hold.ttl_ms, hold.in_flight_cap, hold.request_id] if hold else [0, 0, ""]
        for b in buckets:
            args += [b.capacity, b.window_ms, b.cost, max(b.need, b.cost)]
        for c in counters:
            args += [repr(float(c.limit)), repr(float(c.reserve)) if hold else "0"]
        keys = [b.key for b in buckets] + [c.key for c in counters]
        keys += [reserved_key(c.key) for c in counters]
        if hold:
            keys += [hold.ledger_key, hold_key(hold.ledger_key, hold.request_id), hold.in_flight_key]
        status, index, retry_ms, exhausted, *missing = self._take(keys=keys, args=args)
        return Verdict(admitted=int(status) == 1, refused=int(index) - 1, retry_after_ms=int(retry_ms),
                       missing=tuple(int(m) - 1 for m in missing),
                       counter_state=("short", "used", "held")[int(exhausted)])

    def release(self, ledger_key: str, request_id: str) -> bool:
        """Give back what a request holds; False when it holds nothing (settled or expired)."""
        return bool(self._release(keys=[ledger_key, hold_key(ledger_key, request_id)], args=[request_id]))

    def spend(self, buckets: list[Bucket], counters: list[tuple[str, float]], now_ms: int) -> None:
        """Spend `cost` from each bucket (even below zero) and add to each counter that exists."""
        if not buckets and not counters:
            return
        args: list[int | str] = [now_ms, len(buckets)]
        for b in buckets:
            args += [b.capacity, b.window_ms, b.cost]
        args += [repr(float(amount)) for _, amount in counters]
        self._spend(keys=[b.key for b in buckets] + [k for k, _ in counters], args=args)

    def seed(self, key: str, value: int | float | str, ttl_ms: int) -> None:
        """Create a counter (if nobody did meanwhile) with the value read from the ledger."""
        self.r.set(key, value, nx=True, px=max(ttl_ms, 1))

    def get(self, key: str) -> str | None:
        value = self.r.get(key)
        return None if value is None else str(value.decode() if isinstance(value, bytes) else value)

    def put(self, key: str, value: str, ttl_ms: int) -> None:
        self.r.set(key, value, px=max(ttl_ms, 1))

    def add_float_if_exists(self, key: str, amount: float) -> None:
        self._spend(keys=[key], args=[0, 0, repr(amount)])

    def delete(self, *keys: str) -> None:
        if keys:
            self.r.delete(*keys)


# Adds `amount` to a float counter, creating it at 0, keeping its TTL: what INCRBYFLOAT does, without
# calling it. Redis 6.2 (the embedded local server) corrupts its heap when a script calls INCRBYFLOAT:
# the command rewrites its own argv for replication (SET ... KEEPTTL, one argument more), realloc
# may keep the pointer while shrinking the script engine's cached argv, and a later call with more
# arguments writes past it (a crash in `rewriteClientCommandArgument`, seen in this project's test
# run; upstream redis/redis#11652 fixed the cache in 7.0). 17 significant digits read back exactly.
_INCR_FLOAT_FN = """
local function incr_float(key, amount)
  local value = tonumber(redis.call('GET', key) or '0') + tonumber(amount)
  redis.call('SET', key, string.format('%.17g', value), 'KEEPTTL')
  return value
end
"""

# Releases one hold: subtract each reservation from its counter's sum, drop the in-flight slot.
# Shared by the admission script (expired holds, and a retried requestId's earlier hold) and settle.
_RELEASE_FN = _INCR_FLOAT_FN + """
local function release(ledger, hold, rid)
  local fields = redis.call('HGETALL', hold)
  if #fields == 0 then
    redis.call('ZREM', ledger, rid)
    return 0
  end
  for i = 1, #fields, 2 do
    local name, value = fields[i], fields[i + 1]
    if name == '~fly' then
      redis.call('ZREM', value, rid)
    else
      local left = incr_float(name .. ':res', -tonumber(value))
      if left <= 1e-9 then redis.call('DEL', name .. ':res') end
    end
  end
  redis.call('DEL', hold)
  redis.call('ZREM', ledger, rid)
  return 1
end
"""

_RELEASE = _RELEASE_FN + """
return release(KEYS[1], KEYS[2], ARGV[1])
"""

# Sweep expired holds, release a retried request's earlier hold, refill buckets, then check every rule;
# spend, reserve and take a slot only if all admit. Returns {1|0, refusing rule (1-based) or 0,
# retry-after ms, exhausted 1|0, missing counters (1-based)...}. The expired holds' keys are derived
# from the ledger's name and share its hash tag, hence its cluster slot.
_TAKE = _RELEASE_FN + """
local now, nb, nc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl, cap, rid = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local holding = rid ~= ''
local ledger, hold, fly = KEYS[nb + 2 * nc + 1], KEYS[nb + 2 * nc + 2], KEYS[nb + 2 * nc + 3]
if holding then
  local expired = redis.call('ZRANGEBYSCORE', ledger, '-inf', now, 'LIMIT', 0, 100)
  for _, old in ipairs(expired) do release(ledger, ledger .. ':' .. old, old) end
  release(ledger, hold, rid)
  redis.call('ZREMRANGEBYSCORE', fly, '-inf', now)
end
local levels = {}
local worst, worst_ms, exhausted = 0, 0, 1
for i = 1, nb do
  local base = 7 + (i - 1) * 4
  local cap_i, win = tonumber(ARGV[base]), tonumber(ARGV[base + 1])
  local need = tonumber(ARGV[base + 3])
  local st = redis.call('HMGET', KEYS[i], 't', 'ts')
  local level, ts = tonumber(st[1]), tonumber(st[2])
  if level == nil then level, ts = cap_i, now end
  if now > ts then level = math.min(cap_i, level + (now - ts) * cap_i / win); ts = now end
  levels[i] = {level, ts}
  if level < need then
    local wait = math.ceil((need - level) * win / cap_i)
    if need > cap_i then wait = -1 end
    if worst == 0 or wait < 0 or (worst_ms >= 0 and wait > worst_ms) then worst, worst_ms = i, wait end
  end
end
local missing = {}
local first = 7 + nb * 4
for j = 1, nc do
  local used = redis.call('GET', KEYS[nb + j])
  local limit, want = tonumber(ARGV[first + (j - 1) * 2]), tonumber(ARGV[first + (j - 1) * 2 + 1])
  if used == false then
    table.insert(missing, nb + j)
  elseif worst <= nb then
    -- a spent quota outranks a rate limit: its wait is the longer, and it is what the user must know
    used = tonumber(used)
    local held = tonumber(redis.call('GET', KEYS[nb + nc + j]) or '0')
    if used >= limit then
      worst, worst_ms, exhausted = nb + j, 0, 1
    elseif want > 0 and used + want > limit then
      worst, worst_ms, exhausted = nb + j, 0, 0
    elseif want > 0 and used + held + want > limit then
      worst, worst_ms, exhausted = nb + j, 0, 2
    end
  end
end
if worst > 0 then return {0, worst, worst_ms, exhausted} end
if #missing > 0 then
  local out = {0, 0, 0, 0}
  for _, m in ipairs(missing) do table.insert(out, m) end
  return out
end
if holding and cap > 0 and redis.call('ZCARD', fly) >= cap then return {0, nb + nc + 1, 0, 0} end
for i = 1, nb do
  local base = 7 + (i - 1) * 4
  local cap_i, win, cost = tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local level = levels[i][1] - cost
  redis.call('HSET', KEYS[i], 't', tostring(level), 'ts', tostring(levels[i][2]))
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap_i - level) * win / cap_i) + 1000)
end
if holding then
  for j = 1, nc do
    local want = tonumber(ARGV[first + (j - 1) * 2 + 1])
    if want > 0 then
      incr_float(KEYS[nb + nc + j], ARGV[first + (j - 1) * 2 + 1])
      redis.call('PEXPIRE', KEYS[nb + nc + j], ttl + 60000)
      redis.call('HSET', hold, KEYS[nb + j], ARGV[first + (j - 1) * 2 + 1])
    end
  end
  redis.call('HSET', hold, '~fly', fly)
  redis.call('PEXPIRE', hold, ttl + 60000)
  redis.call('ZADD', ledger, now + ttl, rid)
  redis.call('PEXPIRE', ledger, ttl + 60000)
  redis.call('ZADD', fly, now + ttl, rid)
  redis.call('PEXPIRE', fly, ttl + 60000)
end
return {1, 0, 0, 0}
"""

# Spend from buckets (below zero if need be) and add to counters that exist (a missing counter is
# seeded from the ledger, which already holds this spend). ARGV: now, nb, (cap, win, cost) per bucket,
# then one amount per counter (a float, so dollars work too).
_SPEND = _INCR_FLOAT_FN + """
local now = tonumber(ARGV[1])
local nb = tonumber(ARGV[2])
for i = 1, nb do
  local base = 2 + (i - 1) * 3
  local cap, win, cost = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local st = redis.call('HMGET', KEYS[i], 't', 'ts')
  local level, ts = tonumber(st[1]), tonumber(st[2])
  if level == nil then level, ts = cap, now end
  if now > ts then level = math.min(cap, level + (now - ts) * cap / win); ts = now end
  level = level - cost
  redis.call('HSET', KEYS[i], 't', tostring(level), 'ts', tostring(ts))
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap - level) * win / cap) + 1000)
end
local first = 2 + nb * 3
for j = 1, #KEYS - nb do
  if redis.call('EXISTS', KEYS[nb + j]) == 1 then
    incr_float(KEYS[nb + j], ARGV[first + j])
  end
end
return 1
"""
