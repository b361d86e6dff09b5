"""Rate-limit buckets and quota counters in Redis, checked and spent atomically by Lua scripts.

One script call checks every rule of a request and spends from all of them only when all admit, so
concurrent requests can never overshoot a limit: Redis runs a script to completion before the next.
The clock is passed in (milliseconds), which lets tests move time across a period boundary.

Buckets are token buckets: `capacity` units, refilled evenly over `window_ms`. A spend may drive a bucket
below zero (tokens are only known after an answer); it then admits nothing until it refills above `need`.
Quota counters are plain integers under keys that name their period, created by `seed` from the usage
ledger and expiring after the period, so a new period starts from zero on its own.
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
    limit: int  # admits while the counter is below this


@dataclass(frozen=True, slots=True)
class Verdict:
    admitted: bool
    refused: int = -1  # index of the refusing rule: buckets first, then counters
    retry_after_ms: int = 0
    missing: tuple[int, ...] = ()  # counters whose key is absent: seed them, then ask again


class LimitStore:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._take = client.register_script(_TAKE)
        self._spend = client.register_script(_SPEND)

    def take(self, buckets: list[Bucket], counters: list[Counter], now_ms: int) -> Verdict:
        if not buckets and not counters:
            return Verdict(admitted=True)
        args: list[int] = [now_ms, len(buckets)]
        for b in buckets:
            args += [b.capacity, b.window_ms, b.cost, max(b.need, b.cost)]
        args += [c.limit for c in counters]
        keys = [b.key for b in buckets] + [c.key for c in counters]
        status, index, retry_ms, *missing = self._take(keys=keys, args=args)
        return Verdict(admitted=int(status) == 1, refused=int(index) - 1, retry_after_ms=int(retry_ms),
                       missing=tuple(int(m) - 1 for m in missing))

    def spend(self, buckets: list[Bucket], counters: list[tuple[str, int]], now_ms: int) -> None:
        """Spend `cost` from each bucket (even below zero) and add to each counter that exists."""
        if not buckets and not counters:
            return
        args: list[int] = [now_ms, len(buckets)]
        for b in buckets:
            args += [b.capacity, b.window_ms, b.cost]
        args += [amount for _, amount in counters]
        self._spend(keys=[b.key for b in buckets] + [k for k, _ in counters], args=args)

    def seed(self, key: str, value: int, ttl_ms: int) -> None:
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


# Refill, then check every rule; spend only if all admit. Returns {1|0, refusing rule (1-based) or 0,
# retry-after ms, missing counters (1-based)...}.
_TAKE = """
local now = tonumber(ARGV[1])
local nb = tonumber(ARGV[2])
local levels = {}
local worst, worst_ms = 0, 0
for i = 1, nb do
  local base = 2 + (i - 1) * 4
  local cap, win = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local need = tonumber(ARGV[base + 4])
  local st = redis.call('HMGET', KEYS[i], 't', 'ts')
  local level, ts = tonumber(st[1]), tonumber(st[2])
  if level == nil then level, ts = cap, now end
  if now > ts then level = math.min(cap, level + (now - ts) * cap / win); ts = now end
  levels[i] = {level, ts}
  if level < need then
    local wait = math.ceil((need - level) * win / cap)
    if need > cap then wait = -1 end
    if worst == 0 or wait < 0 or (worst_ms >= 0 and wait > worst_ms) then worst, worst_ms = i, wait end
  end
end
local missing = {}
local first = 2 + nb * 4
for j = 1, #KEYS - nb do
  local used = redis.call('GET', KEYS[nb + j])
  if used == false then
    table.insert(missing, nb + j)
  elseif worst <= nb and tonumber(used) >= tonumber(ARGV[first + j]) then
    -- a spent quota outranks a rate limit: its wait is the longer, and it is what the user must know
    worst, worst_ms = nb + j, 0
  end
end
if worst > 0 then return {0, worst, worst_ms} end
if #missing > 0 then
  local out = {0, 0, 0}
  for _, m in ipairs(missing) do table.insert(out, m) end
  return out
end
for i = 1, nb do
  local base = 2 + (i - 1) * 4
  local cap, win, cost = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local level = levels[i][1] - cost
  redis.call('HSET', KEYS[i], 't', tostring(level), 'ts', tostring(levels[i][2]))
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap - level) * win / cap) + 1000)
end
return {1, 0, 0}
"""

# Spend from buckets (below zero if need be) and add to counters that exist (a missing counter is
# seeded from the ledger, which already holds this spend). ARGV: now, nb, (cap, win, cost) per bucket,
# then one amount per counter (INCRBYFLOAT, so dollars work too).
_SPEND = """
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
    redis.call('INCRBYFLOAT', KEYS[nb + j], ARGV[first + j])
  end
end
return 1
"""
