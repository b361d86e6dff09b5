"""What the benchmarks count, against real servers: `bench overhead`'s Redis round trips and commands
per chat come from the embedded Redis's own INFO counters, and `bench connections` derives what a
connection's first message leaves from its soak's samples."""

from __future__ import annotations

import redis

from chatstack.bench.connections import PING_EVERY_S, first_message_bytes
from chatstack.bench.overhead import RedisCounter


def test_redis_counter_counts_a_pipeline_as_one_round_trip_and_not_its_own_calls(redis_url: str) -> None:
    socket_path = redis_url.removeprefix("unix://")
    counter, other = RedisCounter(socket_path), redis.Redis(unix_socket_path=socket_path)
    try:
        other.ping()  # the client's connection is open before the count starts
        counter.start()
        pipe = other.pipeline(transaction=False)
        for i in range(3):
            pipe.set(f"bench-counter-{i}", i)
        pipe.execute()  # one round trip, three commands
        other.get("bench-counter-0")
        other.delete("bench-counter-1")  # two round trips, one command each
        assert counter.per_chat(1) == {"round_trips": 3.0, "commands": 5.0}

        counter.start()
        for _ in range(4):
            other.exists("bench-counter-2")
        assert counter.per_chat(2) == {"round_trips": 2.0, "commands": 2.0}  # per chat: 4 over 2
    finally:
        counter.close()
        other.close()


def test_first_message_bytes_reads_the_sample_after_every_connection_pinged_once() -> None:
    start = 250 * 2**20
    samples = [(0.0, start), (10.0, start - 4096), (PING_EVERY_S, start + 1_000_000)]
    samples += [(PING_EVERY_S + 10.0, start + 2_690_000), (PING_EVERY_S + 20.0, start + 9_000_000)]
    assert first_message_bytes(samples, held=10_000, sample_s=10.0) == 269.0
    assert first_message_bytes(samples[:3], held=10_000, sample_s=10.0) is None  # the soak ended too soon
    assert first_message_bytes(samples, held=0, sample_s=10.0) is None
