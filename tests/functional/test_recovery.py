"""Issue 9's chat-flow guarantees against real PostgreSQL and Redis, with in-process transports for the
model (LMI chat-completions chunks through the real parser), @connections (what PostToConnection
delivers) and SQS (what SendMessage receives):

- a generation holds a short lease renewed while it runs; a dead worker's request is taken over once
  its lease lapses, keeps its answer id and seq numbering, and never yields two answers;
- a live holder's request is not generated twice;
- a job that does not match its stored message is dropped (the queue is not a trust boundary);
- an answer PostgreSQL cannot take is not claimed as done: the client gets INTERNAL with retryAfter,
  the answer is kept and the redelivery stores it;
- a repeated sendMessage or a resume is answered with the outcome; an orphan is enqueued again;
- Redis down: the frames still reach the job's connection;
- the circuit breaker's state is shared by every worker process (Redis) and closes on the first chunk.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from lambdas import protocol
from lambdas.adapters.auth import Identity
from lambdas.adapters.cache import Cache, RequestRecord
from lambdas.adapters.db import Database
from lambdas.adapters.model import ModelClient, SharedCircuitBreaker
from lambdas.config import Settings
from lambdas.errors import ModelUnavailable, RateLimited
from lambdas.runtime import Deps
from lambdas.services.chat import ChatService
from lambdas.services.generation import GenerationService, Job
from lambdas.services.recovery import RecoveryService

LEASE_S = 1.0
ANSWER = "The lease keeps one worker on each answer. A dead worker's lease lapses in seconds."


class Posts:
    """@connections as an in-process transport: what PostToConnection delivered, per connection."""

    def __init__(self) -> None:
        self.frames: dict[str, list[protocol.ServerFrame]] = {}
        self.lock = threading.Lock()

    def post(self, connection_id: str, data: str) -> bool:
        with self.lock:
            self.frames.setdefault(connection_id, []).append(protocol.parse_server_frame(data))
        return True

    def of(self, connection_id: str) -> list[protocol.ServerFrame]:
        with self.lock:
            return list(self.frames.get(connection_id, []))


class Sent:
    """SQS SendMessage as an in-process transport (the JobQueue's boto3 client)."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []

    def send_message(self, **kwargs: Any) -> dict[str, str]:
        self.jobs.append({**kwargs, "job": json.loads(kwargs["MessageBody"])})
        return {"MessageId": str(uuid.uuid4())}


class Model:
    """An LMI endpoint: streams `text` word by word as chat.completion.chunk JSON lines."""

    def __init__(self, text: str = ANSWER, delay_s: float = 0.0) -> None:
        self.text = text
        self.delay_s = delay_s
        self.calls = 0

    def stream(self, body: dict[str, Any]) -> Iterator[bytes]:
        self.calls += 1
        words = self.text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            time.sleep(self.delay_s)
            yield json.dumps({"choices": [{"index": 0, "delta": {"content": piece}}]}).encode() + b"\n"
        yield json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 7, "completion_tokens": len(words)}}).encode() + b"\n"


def make_deps(pg_url: str, redis_url: str, model: Model, **overrides: Any) -> Deps:
    from lambdas.adapters.queue import JobQueue

    settings = Settings(environment="test", database_url=pg_url, redis_url=redis_url,
                        connections_url="http://127.0.0.1:9", queue_url="http://127.0.0.1:9/q",
                        model_endpoint="http://127.0.0.1:9/invocations", rag_enabled=False,
                        generation_lease_s=LEASE_S, flush_interval_ms=0, flush_max_interval_ms=0,
                        **{"limits_enabled": False, **overrides})
    d = Deps(settings)
    d.__dict__["connections"] = Posts()
    d.__dict__["queue"] = JobQueue("http://127.0.0.1:9/q", region="us-east-1", client=Sent())
    d.__dict__["model"] = ModelClient(model)
    return d


@pytest.fixture
def model() -> Model:
    return Model()


@pytest.fixture
def deps(pg_url: str, redis_url: str, model: Model) -> Deps:
    return make_deps(pg_url, redis_url, model)


def posts(d: Deps) -> Posts:
    return d.__dict__["connections"]  # type: ignore[no-any-return]


def sent(d: Deps) -> Sent:
    return d.queue.client  # type: ignore[no-any-return]


def accept(d: Deps, text: str = "How do leases work?", connection: str = "c1") -> tuple[Identity, Job]:
    """A sendMessage through ChatService; returns the identity and the job it enqueued."""
    identity = Identity(tenant_id=f"t-{uuid.uuid4().hex[:8]}", user_id="alice", scopes=frozenset({"chat"}))
    msg = protocol.SendMessage(action="sendMessage", requestId=uuid.uuid4(), text=text)
    ack = ChatService(d).accept(identity, msg, connection)
    assert isinstance(ack, protocol.Ack)
    return identity, Job.parse(sent(d).jobs[-1]["job"])


def answers(d: Deps, request_id: str) -> list[dict[str, Any]]:
    with d.db.transaction() as conn:
        return conn.execute(
            "SELECT id, content, finish_reason FROM messages WHERE request_id = %s AND role = 'assistant'",
            (request_id,),
        ).fetchall()


def text_of(frames: list[protocol.ServerFrame]) -> str:
    text = ""
    for f in frames:
        if isinstance(f, protocol.Delta):
            text = f.text if f.restart else text + f.text
    return text


def seqs(frames: list[protocol.ServerFrame]) -> list[int]:
    return [f.seq for f in frames if isinstance(f, protocol.Delta)]


def leave_dead_attempt(d: Deps, job: Job, text: str, pieces: int) -> None:
    """What a worker killed mid-answer leaves behind: its lease (never renewed again) and the deltas it
    had published; it died after storing its last delta in Redis and before posting it."""
    assert d.cache.claim_generation(job.request_id, "dead-worker", LEASE_S)
    words = text.split(" ")
    for seq in range(1, pieces + 1):
        piece = words[seq - 1] if seq == 1 else " " + words[seq - 1]
        frame = protocol.dump(protocol.Delta(requestId=job.request_id, seq=seq, text=piece))
        d.cache.publish(job.request_id, frame, 60)
        if seq < pieces:
            posts(d).post(job.connection_id, frame)


# ---- leases and takeover ---------------------------------------------------------------------------


def test_a_dead_workers_request_is_taken_over_within_a_lease_and_continues_its_stream(deps: Deps) -> None:
    _, job = accept(deps)
    leave_dead_attempt(deps, job, ANSWER, pieces=3)
    started = time.monotonic()
    GenerationService(deps).run(job)
    assert time.monotonic() - started < LEASE_S * 3
    frames = posts(deps).of(job.connection_id)
    assert seqs(frames) == list(range(1, len(seqs(frames)) + 1)), "no seq missing, none repeated"
    assert not any(isinstance(f, protocol.Delta) and f.restart for f in frames)
    assert text_of(frames) == ANSWER
    assert isinstance(frames[-1], protocol.Done) and frames[-1].message_id == job.answer_id
    assert [a["content"] for a in answers(deps, job.request_id)] == [ANSWER]


def test_a_takeover_whose_text_differs_restarts_the_clients_text(pg_url: str, redis_url: str) -> None:
    d = make_deps(pg_url, redis_url, Model("A different answer this time."))
    _, job = accept(d)
    leave_dead_attempt(d, job, ANSWER, pieces=4)
    GenerationService(d).run(job)
    frames = posts(d).of(job.connection_id)
    restarts = [f for f in frames if isinstance(f, protocol.Delta) and f.restart]
    assert len(restarts) == 1 and restarts[0].seq == 5
    assert text_of(frames) == "A different answer this time."
    assert [a["content"] for a in answers(d, job.request_id)] == ["A different answer this time."]


class Hanging(Model):
    """A model whose worker process stalls after `words` words (SIGSTOP, a frozen VM): the stream
    stops, and so does everything else the process does, its lease renewals included."""

    def __init__(self, text: str, words: int) -> None:
        super().__init__(text)
        self.words, self.hung, self.wake = words, threading.Event(), threading.Event()

    def stream(self, body: dict[str, Any]) -> Iterator[bytes]:
        for i, line in enumerate(super().stream(body)):
            if i == self.words:
                self.hung.set()
                self.wake.wait(30)
            yield line


def test_a_worker_that_stalled_past_its_lease_and_was_taken_over_publishes_and_stores_nothing_more(
    pg_url: str, redis_url: str
) -> None:
    """Found by stalling a worker for 60 s: the sweeper took its request over and answered it, then the
    stalled worker woke and posted its own seqs 5 and 6 (other text under the same numbers) and a
    second `done`. A frame of a generation is published only while no other worker holds its lease."""
    from lambdas.services.generation import lease_keeper

    stale = Hanging("Stale words that must never reach the client after the takeover", words=3)
    a = make_deps(pg_url, redis_url, stale)
    _, job = accept(a)
    first = threading.Thread(target=GenerationService(a).run, args=(job,), daemon=True)
    first.start()
    assert stale.hung.wait(10)
    lease_keeper(a.cache, LEASE_S).drop(job.request_id)  # the stalled process renews nothing
    time.sleep(LEASE_S * 1.2)
    b = make_deps(pg_url, redis_url, Model(ANSWER))
    b.__dict__["connections"] = posts(a)  # the same client connection
    GenerationService(b).run(job)  # the takeover (the sweeper's re-enqueue, or a resume's)
    stale.wake.set()  # the stalled worker wakes up
    first.join(10)
    frames = posts(a).of(job.connection_id)
    ends = [i for i, f in enumerate(frames) if isinstance(f, protocol.Done | protocol.Error)]
    assert len(ends) == 1 and ends[0] == len(frames) - 1, frames  # one end, and nothing after it
    assert "Stale" not in text_of(frames[3:]) and text_of(frames) == ANSWER
    assert [a["content"] for a in answers(a, job.request_id)] == [ANSWER]


def test_a_request_whose_worker_is_alive_is_not_generated_twice(deps: Deps, model: Model) -> None:
    _, job = accept(deps)
    assert deps.cache.claim_generation(job.request_id, "live-worker", LEASE_S)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(LEASE_S / 3):
            deps.cache.renew_generations({job.request_id: "live-worker"}, LEASE_S)

    beat = threading.Thread(target=heartbeat)
    beat.start()
    try:
        GenerationService(deps).run(job)  # a duplicate delivery: waits out one lease, then yields
    finally:
        stop.set()
        beat.join()
    assert model.calls == 0 and answers(deps, job.request_id) == []
    assert deps.cache.generation_owner(job.request_id) == "live-worker"


def test_a_generation_renews_its_lease_while_the_model_is_slow(pg_url: str, redis_url: str) -> None:
    d = make_deps(pg_url, redis_url, Model("one two three four five six", delay_s=LEASE_S / 2))
    _, job = accept(d)
    owners: list[str | None] = []
    worker = threading.Thread(target=GenerationService(d).run, args=(job,))
    worker.start()
    while worker.is_alive():
        owners.append(d.cache.generation_owner(job.request_id))
        time.sleep(LEASE_S / 4)
    worker.join()
    held = [o for o in owners if o is not None]
    assert len(held) >= len(owners) - 2 and len(set(held)) == 1, "one owner, never lapsed, for ~3 leases"
    assert d.cache.generation_owner(job.request_id) is None  # released at the end
    assert len(answers(d, job.request_id)) == 1


def test_a_redelivered_job_of_a_stored_answer_ends_at_once(deps: Deps, model: Model) -> None:
    _, job = accept(deps)
    GenerationService(deps).run(job)
    GenerationService(deps).run(job)
    assert model.calls == 1 and len(answers(deps, job.request_id)) == 1


# ---- the queue is not a trust boundary -------------------------------------------------------------


def test_a_job_that_does_not_match_its_stored_message_is_dropped(deps: Deps, model: Model) -> None:
    import dataclasses

    _, victim = accept(deps, text="Tenant A's question")
    for change in ({"tenant_id": "other-tenant"}, {"user_id": "mallory"},
                   {"conversation_id": str(uuid.uuid4())}, {"request_id": str(uuid.uuid4())}):
        forged = dataclasses.replace(victim, **change)
        GenerationService(deps).run(forged)
    assert model.calls == 0 and answers(deps, victim.request_id) == []


def test_the_worker_takes_text_and_owner_from_the_stored_message(deps: Deps) -> None:
    import dataclasses

    _, job = accept(deps, text="the stored question")
    GenerationService(deps).run(dataclasses.replace(job, text="a forged question"))
    with deps.db.transaction() as conn:
        usage = conn.execute("SELECT tenant_id, user_id FROM usage_records WHERE request_id = %s",
                             (job.request_id,)).fetchone()
    assert usage == {"tenant_id": job.tenant_id, "user_id": "alice"}
    history = deps.cache.history(job.conversation_id)
    assert history is None or all(t["content"] != "a forged question" for t in history)


# ---- PostgreSQL refusing the answer ------------------------------------------------------------------


class FailingWrites(Database):
    """PostgreSQL going down between reading the job's message and storing the answer: the worker's
    reads (`read()`, no transaction) pass, every transaction is refused."""

    def __init__(self, url: str) -> None:
        super().__init__(url, max_size=2)
        self.down = False

    def transaction(self) -> Any:
        if self.down:
            raise psycopg.OperationalError("connection refused (injected)")
        return super().transaction()


def test_an_answer_postgres_cannot_take_is_kept_and_stored_by_the_redelivery(
    pg_url: str, redis_url: str, model: Model
) -> None:
    d = make_deps(pg_url, redis_url, model)
    _, job = accept(d)
    db = FailingWrites(pg_url)
    d.__dict__["db"] = db
    db.down = True
    with pytest.raises(Exception, match="not stored"):
        GenerationService(d).run(job)
    frames = posts(d).of(job.connection_id)
    assert not any(isinstance(f, protocol.Done) for f in frames), "never done before it is stored"
    assert isinstance(frames[-1], protocol.Error) and frames[-1].code == "INTERNAL"
    assert frames[-1].retry_after is not None and frames[-1].retry_after > 0
    assert d.cache.kept_outcome(job.request_id) is not None
    db.down = False
    GenerationService(d).run(job)  # the redelivery
    assert model.calls == 1, "the kept answer is stored, not generated again"
    assert [a["content"] for a in answers(d, job.request_id)] == [ANSWER]
    done = posts(d).of(job.connection_id)[-1]
    assert isinstance(done, protocol.Done) and done.text == ANSWER
    assert d.cache.kept_outcome(job.request_id) is None


# ---- repeats, resume and orphans --------------------------------------------------------------------


def test_a_repeated_send_of_a_finished_request_gets_the_stored_answer(deps: Deps, model: Model) -> None:
    identity, job = accept(deps)
    GenerationService(deps).run(job)
    deps.cache.r.delete(f"cs:deltas:{job.request_id}")  # the stream expired
    msg = protocol.SendMessage(action="sendMessage", requestId=uuid.UUID(job.request_id), text="again")
    assert ChatService(deps).accept(identity, msg, "c2") is None  # acked directly
    frames = posts(deps).of("c2")
    assert isinstance(frames[0], protocol.Ack) and frames[0].message_id == job.message_id
    assert isinstance(frames[-1], protocol.Done) and frames[-1].text == ANSWER
    assert model.calls == 1 and len(sent(deps).jobs) == 1


def test_a_repeat_while_the_first_attempt_is_being_accepted_waits_for_it(deps: Deps) -> None:
    identity, job = accept(deps)
    rid = str(uuid.uuid4())
    pending = RequestRecord(tenant_id=identity.tenant_id, user_id=identity.user_id)
    assert deps.cache.claim_request(rid, pending, 60) is None  # another connection is accepting it
    msg = protocol.SendMessage(action="sendMessage", requestId=uuid.UUID(rid), text="twice",
                               conversationId=uuid.UUID(job.conversation_id))

    def first_attempt_finishes() -> None:
        time.sleep(0.3)
        deps.cache.forget_request(rid)  # it failed and let the requestId go

    threading.Thread(target=first_attempt_finishes).start()
    ack = ChatService(deps).accept(identity, msg, "c3")
    assert isinstance(ack, protocol.Ack) and ack.request_id == rid


def test_a_resume_of_an_orphaned_request_enqueues_it_again_once(deps: Deps) -> None:
    identity, job = accept(deps)
    time.sleep(LEASE_S)  # accepted longer ago than a lease, and nobody generating it
    before = len(sent(deps).jobs)
    for connection in ("c4", "c5"):
        resume = protocol.Resume(action="resume", requestId=job.request_id)
        ChatService(deps).resume(identity, resume, connection)
    again = [s for s in sent(deps).jobs[before:] if s["job"]["requestId"] == job.request_id]
    assert len(again) == 1
    assert again[0]["MessageGroupId"] != job.conversation_id  # not stuck behind the dead delivery
    GenerationService(deps).run(Job.parse(again[0]["job"]))
    assert isinstance(posts(deps).of("c4")[-1], protocol.Done)
    assert isinstance(posts(deps).of("c5")[-1], protocol.Done)


def test_a_resume_after_redis_lost_the_request_finds_it_in_postgres(deps: Deps) -> None:
    identity, job = accept(deps)
    GenerationService(deps).run(job)
    deps.cache.r.delete(f"cs:req:{job.request_id}", f"cs:deltas:{job.request_id}")
    ChatService(deps).resume(identity, protocol.Resume(action="resume", requestId=job.request_id), "c6")
    done = posts(deps).of("c6")[-1]
    assert isinstance(done, protocol.Done) and done.text == ANSWER


def test_the_sweeper_enqueues_orphans_but_not_answered_or_leased_requests(deps: Deps) -> None:
    _, orphan = accept(deps)
    _, answered = accept(deps)
    GenerationService(deps).run(answered)
    _, leased = accept(deps)
    assert deps.cache.claim_generation(leased.request_id, "someone", 30)
    before = len(sent(deps).jobs)
    RecoveryService(deps).sweep(min_age_s=0)
    again = {s["job"]["requestId"] for s in sent(deps).jobs[before:]}
    assert orphan.request_id in again
    assert answered.request_id not in again and leased.request_id not in again


# ---- Redis down --------------------------------------------------------------------------------------


def test_with_redis_down_the_frames_still_reach_the_jobs_connection(deps: Deps, tmp_path: Any) -> None:
    from lambdas.services.generation import Stream

    deps.__dict__["cache"] = Cache.from_url(f"unix://{tmp_path}/no-redis.sock")
    stream = Stream(deps, "r-1", "conn-of-the-job")
    stream.publish(protocol.Delta(requestId="r-1", seq=1, text="still here"))
    frames = posts(deps).of("conn-of-the-job")
    assert isinstance(frames[0], protocol.Delta) and frames[0].text == "still here"


# ---- the shared circuit breaker ----------------------------------------------------------------------


class Down:
    def __init__(self) -> None:
        self.up = False
        self.calls = 0

    def stream(self, body: dict[str, Any]) -> Iterator[bytes]:
        self.calls += 1
        if not self.up:
            raise ModelUnavailable("down (injected)")
        return Model("back again").stream(body)


def test_the_breaker_is_shared_by_worker_processes_and_closes_on_the_first_chunk(redis_url: str) -> None:
    endpoint = f"endpoint-{uuid.uuid4().hex[:8]}"
    clock = [1000.0]
    transport = Down()

    def process() -> ModelClient:  # each worker process has its own client, Redis is shared
        breaker = SharedCircuitBreaker(Cache.from_url(redis_url), endpoint, failure_threshold=2,
                                       reset_s=5, probes=2, clock=lambda: clock[0])
        return ModelClient(transport, primary_breaker=breaker)

    a, b = process(), process()
    for client in (a, b):
        with pytest.raises(ModelUnavailable):
            list(client.stream_chat([{"role": "user", "content": "hi"}], max_tokens=5))
    assert b.primary_breaker.state == "open" and a.primary_breaker.state == "open"
    with pytest.raises(ModelUnavailable):  # refused without calling the endpoint
        list(a.stream_chat([{"role": "user", "content": "hi"}], max_tokens=5))
    assert transport.calls == 2
    clock[0] += 5  # half-open: a few probes per window, across processes
    assert [a.primary_breaker.allow(), b.primary_breaker.allow(), a.primary_breaker.allow()] == [
        True, True, False]
    clock[0] += 5
    transport.up = True
    chunks = b.stream_chat([{"role": "user", "content": "hi"}], max_tokens=5)
    next(chunks)  # the first chunk closes it for everyone
    assert a.primary_breaker.state == "closed"
    chunks.close()


def test_a_success_resets_the_shared_breaker_only_when_its_call_began_after_a_failure(redis_url: str) -> None:
    """A call let through while Redis held no breaker state skips the reset when it succeeds (one
    round trip less per answer); a failure recorded meanwhile is reset by the next success."""
    endpoint = f"http://model-{uuid.uuid4().hex[:8]}/invocations"
    cache = Cache.from_url(redis_url)
    a = SharedCircuitBreaker(Cache.from_url(redis_url), endpoint, failure_threshold=3)
    b = SharedCircuitBreaker(Cache.from_url(redis_url), endpoint, failure_threshold=3)
    assert a.allow()  # clean: nothing recorded
    b.record_failure()  # another worker's call fails while a's streams
    a.record_success()
    assert cache.breaker_state(endpoint).get("failures") == "1"
    assert a.allow()  # this call begins after the failure
    a.record_success()
    assert cache.breaker_state(endpoint) == {}


def test_a_job_that_failed_for_the_last_time_has_an_error_outcome_and_a_resume_returns_it(
    deps: Deps,
) -> None:
    identity, job = accept(deps)
    GenerationService(deps).give_up(job)  # the worker's last delivery failed
    assert [a["finish_reason"] for a in answers(deps, job.request_id)] == ["error"]
    assert isinstance(posts(deps).of(job.connection_id)[-1], protocol.Error)
    before = len(sent(deps).jobs)
    RecoveryService(deps).sweep(min_age_s=0)  # an outcome, even a failed one, is not an orphan
    assert job.request_id not in {s["job"]["requestId"] for s in sent(deps).jobs[before:]}
    ChatService(deps).resume(identity, protocol.Resume(action="resume", requestId=job.request_id), "c7")
    outcome = posts(deps).of("c7")[-1]
    assert isinstance(outcome, protocol.Error) and "again to retry" in outcome.message


def test_a_repeated_send_of_a_failed_answer_retries_it_in_place(pg_url: str, redis_url: str) -> None:
    model = Down()
    d = make_deps(pg_url, redis_url, Model())
    d.__dict__["model"] = ModelClient(model)
    identity, job = accept(d)
    GenerationService(d).run(job)  # the model is down: the answer fails and is stored as failed
    assert isinstance(posts(d).of(job.connection_id)[-1], protocol.Error)
    assert [a["finish_reason"] for a in answers(d, job.request_id)] == ["error"]
    model.up = True
    before = len(sent(d).jobs)
    msg = protocol.SendMessage(action="sendMessage", requestId=uuid.UUID(job.request_id), text="again")
    assert ChatService(d).accept(identity, msg, "c8") is None
    retry = [s for s in sent(d).jobs[before:] if s["job"]["requestId"] == job.request_id]
    assert len(retry) == 1
    # The retry is in progress: the connection hears no end before the new attempt's (a false
    # NOT_FOUND here once told clients their conversation was deleted, then the answer streamed).
    assert not [f for f in posts(d).of("c8") if isinstance(f, protocol.Error | protocol.Done)]
    GenerationService(d).run(Job.parse(retry[0]["job"]))
    done = posts(d).of("c8")[-1]
    assert isinstance(done, protocol.Done) and done.message_id == job.answer_id
    assert not [f for f in posts(d).of("c8") if isinstance(f, protocol.Error)]
    stored = answers(d, job.request_id)
    assert [(a["id"], a["content"], a["finish_reason"]) for a in stored] == [
        (uuid.UUID(job.answer_id), "back again", "stop")]
    with d.db.transaction() as conn:
        usage = conn.execute("SELECT count(*) AS n, max(finish_reason) AS f FROM usage_records"
                             " WHERE request_id = %s", (job.request_id,)).fetchone()
        count = conn.execute("SELECT message_count FROM conversations WHERE id = %s",
                             (job.conversation_id,)).fetchone()
    assert usage == {"n": 1, "f": "stop"} and count == {"message_count": 2}


def test_a_claim_whose_acceptance_died_frees_its_request_id_in_a_minute_not_a_day(deps: Deps) -> None:
    """Redis stalled mid-accept: the claim (SET NX) reached it, the handler gave up, and neither the
    cleanup nor the update did. A client retrying the same frame as told must not be refused for the
    day a requestId is remembered; a resume of it meanwhile is NOT_FOUND, not a crash."""
    from redis.exceptions import TimeoutError as RedisTimeout

    from lambdas.errors import Internal, NotFound
    from lambdas.services.chat import CLAIM_TTL_S

    identity = Identity(tenant_id=f"t-{uuid.uuid4().hex[:8]}", user_id="alice", scopes=frozenset({"chat"}))
    msg = protocol.SendMessage(action="sendMessage", requestId=uuid.uuid4(), text="during a stall")
    rid = str(msg.request_id)
    cache = deps.cache

    def stalled(*args: Any, **kwargs: Any) -> None:
        raise RedisTimeout("Timeout reading from socket")

    cache.__dict__["watch"] = stalled  # Redis stops answering after the claim
    cache.__dict__["forget_request"] = stalled
    with pytest.raises(RedisTimeout):
        ChatService(deps).accept(identity, msg, "c1")
    del cache.__dict__["watch"], cache.__dict__["forget_request"]
    key = f"cs:req:{rid}"
    assert 0 < cache.r.ttl(key) <= CLAIM_TTL_S  # the claim stayed, for a minute at most
    with pytest.raises(NotFound):
        ChatService(deps).resume(identity, protocol.Resume(action="resume", requestId=msg.request_id), "c2")
    with pytest.raises(Internal, match="still being accepted"):
        ChatService(deps).accept(identity, msg, "c2")  # within the minute: retry shortly
    cache.r.pexpire(key, 1)  # the minute has passed
    time.sleep(0.01)
    assert isinstance(ChatService(deps).accept(identity, msg, "c2"), protocol.Ack)
    assert [j["job"]["requestId"] for j in sent(deps).jobs].count(rid) == 1
    assert cache.r.ttl(key) > CLAIM_TTL_S  # accepted: remembered for the day


def test_a_second_retry_of_a_failed_answer_is_retried_again_not_left_waiting(
    pg_url: str, redis_url: str
) -> None:
    """The model stays down: the first retry fails at once. A second repeat within the re-enqueue
    mark's 20 s got an ack and then nothing (no job, nothing running). The generation that takes a
    request consumes its mark, so the second repeat is enqueued again and ends in its own error."""
    model = Down()
    d = make_deps(pg_url, redis_url, Model())
    d.__dict__["model"] = ModelClient(model)
    identity, job = accept(d)
    GenerationService(d).run(job)  # fails: stored as failed
    msg = protocol.SendMessage(action="sendMessage", requestId=uuid.UUID(job.request_id), text="again")
    for attempt, connection in enumerate(("c8", "c9"), start=1):
        before = len(sent(d).jobs)
        assert ChatService(d).accept(identity, msg, connection) is None
        retry = [s for s in sent(d).jobs[before:] if s["job"]["requestId"] == job.request_id]
        assert len(retry) == 1, f"retry {attempt} was not enqueued"
        GenerationService(d).run(Job.parse(retry[0]["job"]))  # the model is still down
        assert isinstance(posts(d).of(connection)[-1], protocol.Error)


def test_a_cancel_of_a_failed_answer_whose_retry_is_queued_cancels_the_retry(
    pg_url: str, redis_url: str
) -> None:
    """While a retry waits, the stored row still says `error`: the cancel answered with that old error
    and set nothing, and the retry then streamed to "stop"."""
    model = Down()
    d = make_deps(pg_url, redis_url, Model())
    d.__dict__["model"] = ModelClient(model)
    identity, job = accept(d)
    GenerationService(d).run(job)
    model.up = True
    rid = uuid.UUID(job.request_id)
    before = len(sent(d).jobs)
    assert ChatService(d).accept(identity, protocol.SendMessage(action="sendMessage", requestId=rid,
                                                                text="again"), "c8") is None
    (retry,) = [s for s in sent(d).jobs[before:] if s["job"]["requestId"] == job.request_id]
    assert ChatService(d).cancel(identity, protocol.Cancel(action="cancel", requestId=rid)) is None
    GenerationService(d).run(Job.parse(retry["job"]))
    done = posts(d).of("c8")[-1]
    assert isinstance(done, protocol.Done) and done.finish_reason == "cancelled"
    # and once nothing runs, a cancel of the (now cancelled) answer is answered with how it ended
    ended = ChatService(d).cancel(identity, protocol.Cancel(action="cancel", requestId=rid))
    assert isinstance(ended, protocol.Done) and ended.finish_reason == "cancelled"


def test_after_redis_restarted_empty_the_frames_still_reach_the_watchers(deps: Deps) -> None:
    from lambdas.services.generation import Stream

    rid = str(uuid.uuid4())
    deps.cache.watch(rid, "resumed-conn", 60)
    stream = Stream(deps, rid, "job-conn")
    stream.publish(protocol.Delta(requestId=rid, seq=1, text="one"))
    deps.cache.r.delete(f"cs:watch:{rid}", f"cs:deltas:{rid}")  # Redis restarted without its data
    stream.publish(protocol.Delta(requestId=rid, seq=2, text=" two"))
    assert seqs(posts(deps).of("resumed-conn")) == [1, 2]
    assert deps.cache.watchers(rid) == ["resumed-conn"]  # watched again for later resumes


def test_a_lease_forgotten_by_a_restarted_redis_is_taken_again_by_its_owner(deps: Deps) -> None:
    rid = str(uuid.uuid4())
    assert deps.cache.claim_generation(rid, "me", LEASE_S)
    deps.cache.r.delete(f"cs:claim:{rid}")
    assert deps.cache.renew_generations({rid: "me"}, LEASE_S) == []
    assert deps.cache.generation_owner(rid) == "me"
    deps.cache.r.set(f"cs:claim:{rid}", "someone-else")
    assert deps.cache.renew_generations({rid: "me"}, LEASE_S) == [rid]


def test_a_message_that_cannot_be_queued_gives_its_reservation_back(pg_url: str, redis_url: str) -> None:
    """With an in-flight cap of 1, a message whose enqueue failed (SQS unavailable: its transaction
    rolls back) must not hold the user's only slot, and its reserved quota, until the hold's TTL."""
    from botocore.exceptions import EndpointConnectionError

    d = make_deps(pg_url, redis_url, Model(), limits_enabled=True, limit_answers_in_flight_per_user=1)
    identity = Identity(tenant_id=f"t-{uuid.uuid4().hex[:8]}", user_id="alice", scopes=frozenset({"chat"}))
    queue = sent(d)
    working = queue.send_message

    def unavailable(**kwargs: Any) -> dict[str, str]:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/q")

    queue.send_message = unavailable  # type: ignore[method-assign]
    first = protocol.SendMessage(action="sendMessage", requestId=uuid.uuid4(), text="lost to an outage")
    with pytest.raises(EndpointConnectionError):
        ChatService(d).accept(identity, first, "c1")
    queue.send_message = working  # type: ignore[method-assign]
    second = protocol.SendMessage(action="sendMessage", requestId=uuid.uuid4(), text="after the outage")
    assert isinstance(ChatService(d).accept(identity, second, "c1"), protocol.Ack)


def test_a_later_message_gets_its_history_from_postgres_when_redis_has_no_window(
    pg_url: str, redis_url: str
) -> None:
    """The first message of a conversation reads no history (its seq is 1); a later one whose window
    Redis lost reads the turns before its seq from PostgreSQL, and only those."""

    class Recording(Model):
        def __init__(self) -> None:
            super().__init__()
            self.prompts: list[list[dict[str, str]]] = []

        def stream(self, body: dict[str, Any]) -> Iterator[bytes]:
            self.prompts.append([m for m in body["messages"] if m["role"] != "system"])
            return super().stream(body)

    model = Recording()
    d = make_deps(pg_url, redis_url, model)
    identity, first = accept(d, text="My cat is called Miso.")
    GenerationService(d).run(first)
    assert first.seq == 0 and model.prompts[0] == [{"role": "user", "content": "My cat is called Miso."}]
    d.cache.drop_history(first.conversation_id)
    msg = protocol.SendMessage(
        action="sendMessage", requestId=uuid.uuid4(), text="What is my cat called?",
        conversationId=first.conversation_id,
    )
    assert isinstance(ChatService(d).accept(identity, msg, "c1"), protocol.Ack)
    GenerationService(d).run(Job.parse(sent(d).jobs[-1]["job"]))
    assert model.prompts[1] == [
        {"role": "user", "content": "My cat is called Miso."},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "What is my cat called?"},
    ]


def test_a_retry_of_a_failed_answer_passes_the_limits_as_a_new_message_does(
    pg_url: str, redis_url: str
) -> None:
    """A repeated sendMessage of a failed answer generates it again. It went straight to the queue: a
    user whose daily quota was used up got whole answers by retrying failed ones, as many at once as
    they had failed (no answer-in-flight cap either). It is admitted now, for the stored message (not
    the repeat's copy of it, which may ask for less), refused before its ack, and its hold is settled
    by the retry's answer."""
    from lambdas.errors import QuotaExceeded
    from lambdas.services.limits import LimitService, LimitSet

    model = Down()
    d = make_deps(pg_url, redis_url, Model(), limits_enabled=True, limit_answers_in_flight_per_user=1)
    d.__dict__["model"] = ModelClient(model)
    identity, job = accept(d)
    GenerationService(d).run(job)  # the model is down: the answer fails and is stored as failed
    model.up = True
    limits = LimitService(d)
    # a quota that pays for a one-token answer to "again", not for a retry of the stored message
    limits.set_overrides(identity.tenant_id, LimitSet(tokens_per_user_per_day=1000), updated_by="test")
    msg = protocol.SendMessage.model_validate({"action": "sendMessage", "requestId": job.request_id,
                                               "text": "again", "options": {"maxTokens": 1, "rag": False}})
    before = len(sent(d).jobs)
    with pytest.raises(QuotaExceeded):
        ChatService(d).accept(identity, msg, "c8")
    assert [s for s in sent(d).jobs[before:] if s["job"]["requestId"] == job.request_id] == []
    assert posts(d).of("c8") == []  # refused before its ack
    # Once the quota allows it, the retry is acked, enqueued and answered; its answer settles its hold,
    # so the user's one answer-in-flight slot is free again.
    limits.set_overrides(identity.tenant_id, LimitSet(), updated_by="test")
    assert ChatService(d).accept(identity, msg, "c8") is None
    (retry,) = [s for s in sent(d).jobs[before:] if s["job"]["requestId"] == job.request_id]
    GenerationService(d).run(Job.parse(retry["job"]))
    assert isinstance(posts(d).of("c8")[-1], protocol.Done)
    fresh = protocol.SendMessage(action="sendMessage", requestId=uuid.uuid4(), text="a new one")
    assert isinstance(ChatService(d).accept(identity, fresh, "c8"), protocol.Ack)


def test_an_answer_the_model_never_began_bills_no_tokens(pg_url: str, redis_url: str) -> None:
    """The model was unreachable (or its breaker open) before the first chunk: it never read the prompt.
    The failed answer's usage row said the whole prompt's input tokens and dollars, spent from the
    user's quotas: during an outage every attempt and retry used up quota for nothing."""
    d = make_deps(pg_url, redis_url, Model(), limits_enabled=True,
                  model_price_per_1k_output_tokens_usd=1.0)
    d.__dict__["model"] = ModelClient(Down())
    identity, job = accept(d, text="A question long enough that its prompt has tokens to bill.")
    GenerationService(d).run(job)
    assert isinstance(posts(d).of(job.connection_id)[-1], protocol.Error)
    with d.db.transaction() as conn:
        usage = conn.execute("SELECT input_tokens, output_tokens, cost_usd, finish_reason FROM usage_records"
                             " WHERE request_id = %s", (job.request_id,)).fetchone()
    assert usage == {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0, "finish_reason": "error"}
    day = datetime.now(UTC).strftime("%Y%m%d")
    assert float(d.cache.r.get(f"cs:{{{identity.tenant_id}}}:qu:alice:d:{day}") or 0) == 0


def test_a_redelivery_of_an_answer_stored_but_never_settled_frees_the_users_slot(
    pg_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that died between storing its answer and settling its limits left the user's one
    answer-in-flight slot held until the reservation expired (15 minutes): every new message was
    refused meanwhile. The job's redelivery, which finds the answer stored, gives the slot back."""
    d = make_deps(pg_url, redis_url, Model(), limits_enabled=True, limit_answers_in_flight_per_user=1)
    identity, job = accept(d)
    # GIVEN a generation that stores its answer and dies before settling (its charge never runs)
    with monkeypatch.context() as patch:
        patch.setattr(GenerationService, "_charge", lambda self, job, tokens, cost: None)
        GenerationService(d).run(job)
    assert answers(d, job.request_id)[0]["finish_reason"] != "error"
    follow_up = protocol.SendMessage(action="sendMessage", requestId=uuid.uuid4(), text="and then?")
    with pytest.raises(RateLimited):
        ChatService(d).accept(identity, follow_up, "c1")  # the slot is still held
    # WHEN the job is delivered again (SQS: its invocation never reported success)
    GenerationService(d).run(job)
    # THEN nothing is generated twice, and the user may ask again
    assert len(answers(d, job.request_id)) == 1
    assert isinstance(ChatService(d).accept(identity, follow_up, "c1"), protocol.Ack)
