"""The worker's use case: turn one queued job into a streamed, persisted, metered answer.

load context (Redis window, PostgreSQL fallback) -> retrieve -> build the prompt within budget ->
stream from the model -> batch deltas by time into the request's Redis stream and PostToConnection ->
persist the answer and one usage row -> metrics. Every way this can end sends the client a terminal
frame (`done` or `error`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from aws_lambda_powertools.metrics import MetricUnit
from redis.exceptions import RedisError

from lambdas import protocol
from lambdas.adapters import chat_repo
from lambdas.adapters.cache import Cache, GenerationStart
from lambdas.core.continuation import Continuation
from lambdas.core.deltas import DeltaBatcher, Pacing
from lambdas.core.prompt import PROMPT_JOINS, answer_cap, build_prompt, room_left
from lambdas.core.tokens import estimate_tokens
from lambdas.errors import ChatError, Internal, RequestGone, TooLarge
from lambdas.observability import logger, metrics
from lambdas.runtime import Deps
from lambdas.services import models
from lambdas.services.limits import LimitService, token_cost_usd

UNCOMMITTED_GRACE_S = 60.0
COMMIT_WAIT_S = 2.0


class MessageNotCommitted(Exception):
    """The job's user message is not visible yet: redeliver the job."""


class AnswerNotStored(Exception):
    """The answer was generated but PostgreSQL refused it: it is kept in Redis, and the redelivery
    stores it (never claimed as done before it is stored)."""


class LeaseKeeper:
    """Renews the generation leases a process holds, every third of a lease, on one thread. A lease
    outlives a stalled model (renewal does not depend on chunks arriving) but not a dead process."""

    def __init__(self, cache: Cache, lease_s: float) -> None:
        self.cache = cache
        self.lease_s = lease_s
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, request_id: str, owner: str) -> None:
        with self._lock:
            self._held[request_id] = owner
            if self._thread is None:
                self._thread = threading.Thread(target=self._renew, name="lease-keeper", daemon=True)
                self._thread.start()

    def drop(self, request_id: str) -> None:
        with self._lock:
            self._held.pop(request_id, None)

    def _renew(self) -> None:
        while True:
            time.sleep(self.lease_s / 3)
            with self._lock:
                leases = dict(self._held)
                if not leases:
                    self._thread = None
                    return
            try:
                lost = self.cache.renew_generations(leases, self.lease_s)
            except Exception as exc:  # Redis down: the generation goes on; the lease may lapse
                logger.warning("lease renewal failed", extra={"error": str(exc), "leases": len(leases)})
                continue
            for rid in lost:
                logger.warning("generation lease lost", extra={"request_id": rid})


_keepers: weakref.WeakKeyDictionary[Cache, LeaseKeeper] = weakref.WeakKeyDictionary()
_keepers_lock = threading.Lock()


def lease_keeper(cache: Cache, lease_s: float) -> LeaseKeeper:
    with _keepers_lock:
        keeper = _keepers.get(cache)
        if keeper is None:
            keeper = _keepers[cache] = LeaseKeeper(cache, lease_s)
        return keeper


@dataclass(frozen=True, slots=True)
class Job:
    request_id: str
    conversation_id: str
    message_id: str
    answer_id: str
    tenant_id: str
    user_id: str
    connection_id: str
    text: str
    options: dict[str, Any]
    enqueued_at: float
    seq: int = 0  # the message's place in its conversation, from PostgreSQL (0: not read yet)

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Job:
        return cls(
            request_id=str(body["requestId"]),
            conversation_id=str(body["conversationId"]),
            message_id=str(body["messageId"]),
            answer_id=str(body["answerId"]),
            tenant_id=str(body["tenantId"]),
            user_id=str(body["userId"]),
            connection_id=str(body["connectionId"]),
            # Read from PostgreSQL before use (GenerationService._trusted); jobs carry no text, so a
            # message's size and its characters' escapes never reach SQS's limit on a message body.
            text=str(body.get("text") or ""),
            options=dict(body.get("options") or {}),
            enqueued_at=float(body.get("enqueuedAt") or time.time()),
        )


@dataclass
class Outcome:
    """What one answer came to: text, finish reason, tokens and timing."""

    started: float
    finish: str = "stop"
    parts: list[str] = field(default_factory=list)
    citations: list[protocol.Citation] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    ttft_ms: int | None = None
    model: str = ""  # the offered model that answered ("" = the deployment's profile)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class Stream:
    """Publishes frames of one request: to its Redis stream (for resume) and to every watcher. When
    Redis fails, frames go straight to the connections last known to watch (at least the job's own),
    so a Redis outage costs resume, never the answer's frames."""

    def __init__(self, deps: Deps, request_id: str, connection_id: str = "", owner: str = "") -> None:
        """`owner`: the generation lease's owner publishing (a generation's stream): once another
        holds the lease, nothing more is published (`superseded`)."""
        self.d = deps
        self.rid = request_id
        self.owner = owner
        self.cancelled = False
        self.superseded = False
        self.watchers: list[str] = [connection_id] if connection_id else []

    def publish(self, frame: protocol.ServerFrame) -> None:
        if self.superseded:
            return
        data = protocol.dump(frame)
        try:
            result = self.d.cache.publish(self.rid, data, self.d.settings.delta_ttl_s, owner=self.owner)
        except RedisError as exc:
            logger.warning("publish through Redis failed; posting directly", extra={"error": str(exc)})
            for connection_id in list(self.watchers):
                self._post(connection_id, data, forget=False)
            return
        if result.superseded:
            # This worker stalled past its lease and another took the request over: its frames would
            # repeat seqs with other text, and end the request twice.
            self._supersede()
            return
        self.cancelled = result.cancelled
        if not result.watchers and self.watchers:
            # Redis came back empty (restarted): the watchers it forgot are still listening; post to
            # them and watch them again so later frames and resumes find them.
            with contextlib.suppress(RedisError):
                for connection_id in self.watchers:
                    self.d.cache.watch(self.rid, connection_id, self.d.settings.delta_ttl_s)
        else:
            self.watchers = result.watchers
        for connection_id in list(self.watchers):
            self._post(connection_id, data, forget=True)

    def taken_over(self) -> bool:
        """Whether another worker has taken this generation's lease since (asked before the answer is
        stored, which publishes nothing). Redis down: not known, so False, and the store goes ahead
        (the first final answer stored is the one kept, chat_repo.record_answer)."""
        if self.superseded or not self.owner:
            return self.superseded
        try:
            holder = self.d.cache.latest_generation(self.rid)
        except RedisError:
            return False
        if holder is not None and holder != self.owner:
            self._supersede()
        return self.superseded

    def _supersede(self) -> None:
        logger.warning("generation taken over by another worker; this one stops",
                       extra={"request_id": self.rid})
        metrics.add_metric(name="GenerationsSuperseded", unit=MetricUnit.Count, value=1)
        self.superseded = True

    def repost(self, data: str) -> None:
        """Post a frame already in the request's stream to everyone watching, again."""
        with contextlib.suppress(RedisError):
            self.watchers = self.d.cache.watchers(self.rid) or self.watchers
        for connection_id in list(self.watchers):
            self._post(connection_id, data, forget=True)

    def _post(self, connection_id: str, data: str, *, forget: bool) -> None:
        try:
            posted = self.d.connections.post(connection_id, data)
        except Exception as exc:  # one broken connection must not end the others' stream
            logger.warning("post failed", extra={"connection_id": connection_id, "error": str(exc)})
            return
        if not posted:
            # Gone: the client may come back and resume; stop posting to this connection.
            self.watchers = [c for c in self.watchers if c != connection_id]
            if forget:
                with contextlib.suppress(RedisError):
                    self.d.cache.unwatch(self.rid, connection_id)


class GenerationService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps
        self.s = deps.settings

    def run(self, job: Job) -> None:
        """Generate the answer for one job. Raises only for failures worth a redelivery.

        The job is checked against the stored user message (a forged or stale job is dropped), then
        the generation lease is taken: while another worker holds it and renews it, this delivery is
        a duplicate; once a dead worker's lease lapses, this one takes over."""
        stored = self._stored_request(job)
        if stored is None:
            return
        trusted = self._trusted(job, stored)
        if trusted is None:
            return
        job = trusted
        if stored.answered:
            # Stored and final: a duplicate delivery, or one whose worker died after storing the answer
            # and before settling its limits. Give back its reservation (nothing once it was settled),
            # so the user's answer-in-flight slot does not wait out the reservation's expiry. Its
            # tokens are not charged here: a duplicate of a settled answer would charge them twice.
            self._charge(job, 0, Decimal(0))
            return
        owner = uuid.uuid4().hex
        start = self._acquire(job, owner)
        if start is None:
            return
        keeper = lease_keeper(self.d.cache, self.s.generation_lease_s)
        keeper.hold(job.request_id, owner)
        try:
            if start.kept is not None:
                self._store_kept(job, start.kept, owner)
            else:
                self._generate(job, start, owner)
        finally:
            keeper.drop(job.request_id)
            with contextlib.suppress(RedisError):
                self.d.cache.release_generation(job.request_id, owner)  # a redelivery may run at once

    def give_up(self, job: Job) -> None:
        """The job's last delivery failed: store an error answer (so the request has an outcome that a
        repeat returns, and recovery stops) and tell the client. Best effort throughout: a dependency
        may be what failed. An answer kept in Redis (PostgreSQL refused it) is left for recovery."""
        try:
            if self.d.cache.kept_outcome(job.request_id) is not None:
                return  # the client was told to retry; the sweeper stores it once PostgreSQL is back
        except RedisError:
            pass
        try:
            with self.d.db.transaction() as conn:
                stored = chat_repo.stored_request(conn, message_id=job.message_id)
            trusted = self._trusted(job, stored) if stored is not None else None
            if trusted is not None and not self._answered(trusted):  # only a real request's ledger
                self._record(trusted, Outcome(started=time.monotonic(), finish="error"))
        except Exception:
            logger.exception("could not store the error answer", extra={"request_id": job.request_id})
        error = Internal("The answer could not be generated; please send the message again.")
        try:
            Stream(self.d, job.request_id, job.connection_id).publish(
                protocol.error_frame(error, job.request_id)
            )
        except Exception:
            logger.exception("could not send the final error frame", extra={"request_id": job.request_id})

    def _stored_request(self, job: Job) -> chat_repo.StoredRequest | None:
        """sendMessage enqueues inside its transaction, so a fast worker can see the job before the
        commit. Wait a moment; then redeliver (raise) while the job is young, drop it when it is old
        (its transaction rolled back: the client already got an error frame)."""
        # The commit follows the enqueue within milliseconds unless the machine is loaded: look often
        # for up to COMMIT_WAIT_S before paying a redelivery's backoff (a second or more).
        deadline = time.monotonic() + COMMIT_WAIT_S
        pause = 0.005
        while True:
            with self.d.db.read() as conn:
                stored = chat_repo.stored_request(conn, message_id=job.message_id)
            if stored is not None:
                return stored
            if time.monotonic() >= deadline:
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
        if self._deleted(job):
            logger.info("job for a deleted message dropped", extra={"request_id": job.request_id})
            self._charge(job, 0, Decimal(0))  # releases its reservation: nothing will be generated
            Stream(self.d, job.request_id, job.connection_id).publish(
                protocol.error_frame(RequestGone(), job.request_id)
            )
            return None
        if time.time() - job.enqueued_at < UNCOMMITTED_GRACE_S:
            raise MessageNotCommitted(f"message {job.message_id} is not committed yet")
        logger.warning("job without a stored message dropped", extra={"request_id": job.request_id})
        return None

    def _deleted(self, job: Job) -> bool:
        """The message was committed (sendMessage marks its request accepted only after the commit)
        and is gone: its conversation was deleted while the job waited. Unknown when Redis is down."""
        try:
            record = self.d.cache.request(job.request_id)
        except RedisError:
            return False
        return (
            record is not None
            and record.state == "accepted"
            and (record.tenant_id, record.user_id, record.message_id)
            == (job.tenant_id, job.user_id, job.message_id)
        )

    @staticmethod
    def _trusted(job: Job, stored: chat_repo.StoredRequest) -> Job | None:
        """The job as PostgreSQL knows it. The queue is not a trust boundary: a job whose tenant, user,
        conversation or requestId differ from its stored message is dropped and reported."""
        claimed = (job.tenant_id, job.user_id, job.conversation_id, job.request_id)
        actual = (stored.tenant_id, stored.user_id, stored.conversation_id, stored.request_id)
        if claimed != actual:
            logger.warning(
                "security: job does not match its stored message; dropped",
                extra={"message_id": job.message_id, "claimed": claimed, "stored": actual},
            )
            metrics.add_metric(name="ForgedJobs", unit=MetricUnit.Count, value=1)
            return None
        return dataclasses.replace(
            job,
            answer_id=stored.answer_id,
            seq=stored.seq,
            text=stored.text,
            options={**job.options, **stored.options} if stored.options else job.options,
        )

    def _answered(self, job: Job) -> bool:
        """Stored and final: a failed answer is generated again when its request is retried."""
        with self.d.db.read() as conn:
            return chat_repo.answer_final(conn, job.answer_id)

    def _acquire(self, job: Job, owner: str) -> GenerationStart | None:
        """Take the lease, waiting out a lease whose holder may be dead, and read with the claim what
        the generation needs from Redis (one round trip; a failure fails the delivery, which is
        retried). None when the answer is stored meanwhile, or when the holder keeps renewing (it is
        alive: this delivery is a duplicate). The caller has seen the answer not stored a moment ago."""
        lease_s = self.s.generation_lease_s
        deadline = time.monotonic() + lease_s * 1.5 + 1
        while True:
            start = self.d.cache.claim_generation_and_start(
                job.request_id, owner, lease_s, job.conversation_id
            )
            if start is not None:
                if self._answered(job):  # stored between the check and the claim
                    self.d.cache.release_generation(job.request_id, owner)
                    return None
                return start
            if time.monotonic() >= deadline:
                logger.info("generation held by a live worker", extra={"request_id": job.request_id})
                return None
            time.sleep(min(0.5, lease_s / 4))
            if self._answered(job):  # the holder finished while this delivery waited
                return None

    def _store_kept(self, job: Job, kept: dict[str, Any], owner: str) -> None:
        """Store an answer generated before PostgreSQL failed, then tell whoever watches now."""
        out = Outcome(
            started=time.monotonic() - float(kept.get("durationS", 0)),
            finish=str(kept["finish"]),
            parts=[str(kept["text"])],
            citations=[protocol.Citation.model_validate(c) for c in kept.get("citations", [])],
            input_tokens=int(kept.get("inputTokens", 0)),
            output_tokens=int(kept.get("outputTokens", 0)),
            ttft_ms=kept.get("ttftMs"),
            model=str(kept.get("model") or ""),
        )
        self._record(job, out)
        self.d.cache.drop_outcome(job.request_id)
        stream = Stream(self.d, job.request_id, job.connection_id, owner)
        stream.publish(self._done(job, out, text=out.text))

    def _generate(self, job: Job, start: GenerationStart, owner: str) -> None:
        started = time.monotonic()
        stream = Stream(self.d, job.request_id, job.connection_id, owner)
        metrics.add_metric(
            name="QueueWait",
            unit=MetricUnit.Milliseconds,
            value=max(0.0, (time.time() - job.enqueued_at) * 1000),
        )
        if start.cancelled:
            self._finish(job, stream, Outcome(started=started, finish="cancelled"))
            return
        streamed, last_seq, last_delta = self._streamed(start.frames or [])
        if last_delta:
            logger.info("taking over a generation", extra={"request_id": job.request_id, "seq": last_seq})
            metrics.add_metric(name="GenerationTakeovers", unit=MetricUnit.Count, value=1)
            # The dead worker may have died between storing its last delta and posting it: post it
            # again (clients drop a seq they already have), so no seq goes missing.
            stream.repost(last_delta)
        shown = Continuation(streamed)
        max_tokens = answer_cap(job.options.get("maxTokens"), self.s.max_output_tokens)
        out = Outcome(started=started)
        batcher = DeltaBatcher(Pacing.from_settings(self.s), seq=last_seq)
        try:
            room = room_left(
                system=self.s.system_prompt,
                user_text=job.text,
                max_context_tokens=self.s.model_max_context_tokens,
                max_output_tokens=max_tokens,
            )
        except TooLarge as exc:
            # sendMessage refuses such a message; this is one queued before a smaller limit was set.
            # Another delivery would fail alike: the answer is stored as failed, the client told why.
            self._fail(job, stream, batcher, shown, out, exc)
            return
        # The retrieved context takes what the message leaves (up to its own budget), never more: a
        # message that fits is answered, with fewer passages when it is long.
        out.citations, context_block = self._retrieve(job, room - PROMPT_JOINS)
        prompt = build_prompt(
            system=self.s.system_prompt,
            context_block=context_block,
            history=self._history(job, start.history),
            user_text=job.text,
            max_context_tokens=self.s.model_max_context_tokens,
            max_output_tokens=max_tokens,
        )
        out.input_tokens = prompt.input_tokens
        usage: tuple[int, int] | None = None
        began = False  # the model sent a chunk: it read the prompt
        try:
            # options.model picks an offered model (BAD_REQUEST names the choices); the tenant's LoRA
            # adapter comes from the deployment's mapping, never from the client.
            model = models.select(self.d, tenant_id=job.tenant_id, requested=job.options.get("model"))
            out.model = model.model.name
            for chunk in model.client.stream_chat(
                prompt.messages,
                max_tokens=max_tokens,
                temperature=job.options.get("temperature"),
                top_p=job.options.get("topP"),
                adapter=model.adapter,
                stop=job.options.get("stop"),
            ):
                began = True
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.text:
                    out.parts.append(chunk.text)
                    if out.ttft_ms is None:
                        out.ttft_ms = int((time.monotonic() - started) * 1000)
                    # The whole text so far only matters during a takeover (joining it per token
                    # would cost time quadratic in the answer's length).
                    piece = shown.visible(out.text, chunk.text) if shown.pending else chunk.text
                    due = batcher.add(piece, time.monotonic())
                    if due:
                        self._delta(job, stream, shown, due)
                        if stream.cancelled:
                            out.finish = "cancelled"
                            break
                        if stream.superseded:  # taken over: the other worker answers; store nothing
                            break
                if chunk.finish_reason:
                    out.finish = chunk.finish_reason
        except ChatError as exc:
            if not began:  # unreachable, its breaker open, or it refused the request: no prompt was read
                out.input_tokens = 0
            self._fail(job, stream, batcher, shown, out, exc)
            return
        except Exception:  # the model client's contract is ChatError; anything else is a bug
            logger.exception("model stream failed")
            self._fail(job, stream, batcher, shown, out, Internal("The answer failed; please retry."))
            return
        if stream.superseded:
            return
        self._flush(job, stream, batcher, shown, out.text)
        if usage is not None:
            out.input_tokens, out.output_tokens = usage
        else:
            out.output_tokens = estimate_tokens(out.text)
        self._finish(job, stream, out)

    @staticmethod
    def _streamed(frames: list[str]) -> tuple[str, int, str]:
        """The text, last seq and last delta frame an earlier attempt already streamed for this
        request (a takeover)."""
        text, last_seq, last_delta = "", 0, ""
        for raw in frames:
            frame = protocol.parse_server_frame(raw)
            if isinstance(frame, protocol.Delta):
                text = frame.text if frame.restart else text + frame.text
                last_seq, last_delta = frame.seq, raw
        return text, last_seq, last_delta

    @staticmethod
    def _delta(job: Job, stream: Stream, shown: Continuation, due: tuple[int, str]) -> None:
        restart = shown.restart or None
        shown.restart = False
        stream.publish(protocol.Delta(requestId=job.request_id, seq=due[0], text=due[1], restart=restart))

    def _history(self, job: Job, cached: list[dict[str, Any]] | None) -> list[dict[str, str]]:
        """The turns before this message: Redis's window, else PostgreSQL (then cached)."""
        if cached is not None:
            return [t for t in cached if t.get("requestId") != job.request_id]
        if job.seq == 1:
            turns: list[dict[str, str]] = []  # the conversation's first message: nothing came before
        else:
            with self.d.db.read() as conn:
                seq = job.seq or chat_repo.message_seq(conn, job.message_id)
                turns = chat_repo.recent_turns(
                    conn, job.conversation_id, before_seq=seq, limit=self.s.history_turns
                )
        with contextlib.suppress(RedisError):
            self.d.cache.set_history(
                job.conversation_id, turns, keep=self.s.history_turns, ttl_s=self.s.hot_window_ttl_s
            )
        return turns

    def _retrieve(self, job: Job, room: int) -> tuple[list[protocol.Citation], str]:
        """The passages for the prompt's context block, within `room` tokens and the context budget."""
        retriever = self.d.retriever if job.options.get("rag", True) else None
        if retriever is None or self.s.rag_top_k == 0 or room <= 0:
            return [], ""
        from lambdas.rag.retriever import fit_passages, format_context

        passages = retriever.retrieve(
            tenant_id=job.tenant_id, query=job.text, k=self.s.rag_top_k, min_score=self.s.rag_min_score
        )
        passages = fit_passages(passages, min(self.s.rag_context_tokens, room), estimate_tokens)
        citations = [
            protocol.Citation(
                index=i,
                documentId=p.document_id,
                title=p.title,
                chunk=p.chunk,
                score=round(p.score, 4),
                source=p.source,
                snippet=_snippet(p.text),
            )
            for i, p in enumerate(passages, start=1)
        ]
        return citations, format_context(passages) if passages else ""

    def _flush(self, job: Job, stream: Stream, batcher: DeltaBatcher, shown: Continuation, text: str) -> None:
        while tail := batcher.flush(time.monotonic()):  # text beyond one frame comes out in pieces
            self._delta(job, stream, shown, tail)
        whole = shown.finish(text)
        if whole is not None:  # a takeover whose answer is shorter than what the client already shows
            batcher.add(whole, time.monotonic())
            while tail := batcher.flush(time.monotonic()):
                self._delta(job, stream, shown, tail)

    def _fail(
        self,
        job: Job,
        stream: Stream,
        batcher: DeltaBatcher,
        shown: Continuation,
        out: Outcome,
        exc: ChatError,
    ) -> None:
        self._flush(job, stream, batcher, shown, out.text)
        metrics.add_metric(name="GenerationErrors", unit=MetricUnit.Count, value=1)
        logger.warning("generation failed", extra={"request_id": job.request_id, "code": exc.code})
        # The answer was cut short: it is still stored and metered (usage is written once per answer).
        out.finish, out.citations, out.output_tokens = "error", [], estimate_tokens(out.text)
        self._store(job, stream, out)
        stream.publish(protocol.error_frame(exc, job.request_id))  # nothing when superseded

    def _finish(self, job: Job, stream: Stream, out: Outcome) -> None:
        self._store(job, stream, out)
        if stream.superseded:
            return
        with contextlib.suppress(RedisError):
            self.d.cache.append_history(
                job.conversation_id,
                [
                    {"role": "user", "content": job.text, "requestId": job.request_id},
                    {"role": "assistant", "content": out.text, "requestId": job.request_id},
                ],
                keep=self.s.history_turns,
                ttl_s=self.s.hot_window_ttl_s,
            )
        stream.publish(self._done(job, out))
        metrics.add_metric(name="OutputTokens", unit=MetricUnit.Count, value=out.output_tokens)
        metrics.add_metric(name="InputTokens", unit=MetricUnit.Count, value=out.input_tokens)
        if out.ttft_ms is not None:
            metrics.add_metric(name="TimeToFirstToken", unit=MetricUnit.Milliseconds, value=out.ttft_ms)

    @staticmethod
    def _done(job: Job, out: Outcome, text: str | None = None) -> protocol.Done:
        return protocol.Done(
            requestId=job.request_id,
            messageId=job.answer_id,
            finishReason=out.finish,
            usage=protocol.Usage(inputTokens=out.input_tokens, outputTokens=out.output_tokens),
            citations=out.citations,
            text=text,
        )

    def _store(self, job: Job, stream: Stream, out: Outcome) -> None:
        """Store the answer, or, when PostgreSQL cannot take it, keep it in Redis for the redelivery,
        tell the client to retry later, and raise so the job is delivered again. Never `done` before
        the answer is stored. A generation taken over (`Stream.taken_over`) stores nothing: the worker that
        took it over answers."""
        if stream.taken_over():
            return
        try:
            self._record(job, out)
            return
        except psycopg.OperationalError as exc:
            logger.warning("answer not stored", extra={"request_id": job.request_id, "error": str(exc)})
            failure = exc
        kept = {
            "finish": out.finish,
            "text": out.text,
            "citations": [c.model_dump(by_alias=True) for c in out.citations],
            "inputTokens": out.input_tokens,
            "outputTokens": out.output_tokens,
            "ttftMs": out.ttft_ms,
            "durationS": time.monotonic() - out.started,
            "model": out.model,
        }
        with contextlib.suppress(RedisError):
            self.d.cache.keep_outcome(job.request_id, kept, self.s.idempotency_ttl_s)
        error = Internal(
            "The answer could not be saved; send the same message again shortly to get it.",
            retry_after=self.s.dependency_retry_after_s,
        )
        stream.publish(protocol.error_frame(error, job.request_id))
        raise AnswerNotStored(f"answer of {job.request_id} not stored") from failure

    def _record(self, job: Job, out: Outcome) -> None:
        s = self.s
        cost = token_cost_usd(s, out.input_tokens, out.output_tokens, out.model or None)
        with self.d.db.transaction() as conn:
            stored = chat_repo.record_answer(
                conn,
                chat_repo.Answer(
                    answer_id=job.answer_id,
                    conversation_id=job.conversation_id,
                    tenant_id=job.tenant_id,
                    user_id=job.user_id,
                    request_id=job.request_id,
                    text=out.text,
                    finish_reason=out.finish,
                    citations=[c.model_dump(by_alias=True) for c in out.citations],
                    input_tokens=out.input_tokens,
                    output_tokens=out.output_tokens,
                    model_profile=out.model or s.model_profile,
                    region=s.region,
                    ttft_ms=out.ttft_ms,
                    duration_ms=int((time.monotonic() - out.started) * 1000),
                    cost_usd=cost,
                ),
            )
        if stored:  # a redelivery was charged the first time
            self._charge(job, out.input_tokens + out.output_tokens, cost)

    def _charge(self, job: Job, tokens: int, cost: Decimal) -> None:
        """Spend the answer's tokens and dollars from the rate limits and quotas. The ledger row is
        already stored, so a Redis failure here costs limit accuracy, never the answer."""
        try:
            # Releases what admission reserved for this requestId, then charges what the answer used.
            LimitService(self.d).settle(
                job.request_id, tokens, cost, tenant_id=job.tenant_id, user_id=job.user_id
            )
        except Exception:
            logger.exception("charging limits failed", extra={"request_id": job.request_id})


def _snippet(text: str) -> str:
    """The start of a passage on one line, cut at a word within protocol.SNIPPET_CHARS."""
    line = " ".join(text.split())
    if len(line) <= protocol.SNIPPET_CHARS:
        return line
    return line[: protocol.SNIPPET_CHARS - 1].rsplit(" ", 1)[0] + "…"
