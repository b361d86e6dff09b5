"""The worker's use case: turn one queued job into a streamed, persisted, metered answer.

load context (Redis window, PostgreSQL fallback) -> retrieve -> build the prompt within budget ->
stream from the model -> batch deltas by time into the request's Redis stream and PostToConnection ->
persist the answer and one usage row -> metrics. Every way this can end sends the client a terminal
frame (`done` or `error`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from lambdas import protocol, wiring
from lambdas.adapters import chat_repo
from lambdas.core.deltas import DeltaBatcher, Pacing
from lambdas.core.prompt import build_prompt
from lambdas.core.tokens import estimate_tokens
from lambdas.errors import ChatError, Internal
from lambdas.observability import logger, metrics
from lambdas.runtime import Deps
from lambdas.services.limits import LimitService

UNCOMMITTED_GRACE_S = 60.0
# A claimed generation is someone's for as long as a worker may run; a crashed worker's claim expires.
CLAIM_TTL_S = wiring.WORKER.timeout_s


class MessageNotCommitted(Exception):
    """The job's user message is not visible yet: redeliver the job."""
from lambdas.services import models


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
            text=str(body["text"]),
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

    @property
    def text(self) -> str:
        return "".join(self.parts)


class Stream:
    """Publishes frames of one request: to its Redis stream (for resume) and to every watcher."""

    def __init__(self, deps: Deps, request_id: str) -> None:
        self.d = deps
        self.rid = request_id
        self.cancelled = False

    def publish(self, frame: protocol.ServerFrame) -> None:
        data = protocol.dump(frame)
        result = self.d.cache.publish(self.rid, data, self.d.settings.delta_ttl_s)
        self.cancelled = result.cancelled
        for connection_id in result.watchers:
            if not self.d.connections.post(connection_id, data):
                # Gone: the client may come back and resume; stop posting to this connection.
                self.d.cache.unwatch(self.rid, connection_id)


class GenerationService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps
        self.s = deps.settings

    def run(self, job: Job) -> None:
        """Generate the answer for one job. Raises only for failures worth a redelivery."""
        cache = self.d.cache
        if not cache.claim_generation(job.request_id, ttl_s=CLAIM_TTL_S):
            logger.info("generation already claimed", extra={"request_id": job.request_id})
            return
        try:
            if not self._message_committed(job):
                return
            with self.d.db.transaction() as conn:
                if chat_repo.answer_exists(conn, job.answer_id):
                    return  # a redelivery of an answered job
            self._generate(job)
        except BaseException:
            cache.release_generation(job.request_id)  # let the redelivery run
            raise

    def give_up(self, job: Job) -> None:
        """Tell the client that this answer will not come (best effort: Redis may be what failed)."""
        error = Internal("The answer could not be generated; please send the message again.")
        try:
            Stream(self.d, job.request_id).publish(protocol.error_frame(error, job.request_id))
        except Exception:
            logger.exception("could not send the final error frame", extra={"request_id": job.request_id})

    def _message_committed(self, job: Job) -> bool:
        """sendMessage enqueues inside its transaction, so a fast worker can see the job before the
        commit. Wait a moment; then redeliver (raise) while the job is young, drop it when it is old
        (its transaction rolled back: the client already got an error frame)."""
        for attempt in range(5):
            with self.d.db.transaction() as conn:
                if chat_repo.user_message_exists(conn, job.message_id):
                    return True
            time.sleep(0.02 * (attempt + 1))
        if time.time() - job.enqueued_at < UNCOMMITTED_GRACE_S:
            raise MessageNotCommitted(f"message {job.message_id} is not committed yet")
        logger.warning("job without a stored message dropped", extra={"request_id": job.request_id})
        return False

    def _generate(self, job: Job) -> None:
        started = time.monotonic()
        stream = Stream(self.d, job.request_id)
        metrics.add_metric(
            name="QueueWait",
            unit=MetricUnit.Milliseconds,
            value=max(0.0, (time.time() - job.enqueued_at) * 1000),
        )
        if self.d.cache.is_cancelled(job.request_id):
            self._finish(job, stream, Outcome(started=started, finish="cancelled"))
            return
        max_tokens = min(
            int(job.options.get("maxTokens") or self.s.max_output_tokens), self.s.max_output_tokens
        )
        citations, context_block = self._retrieve(job)
        prompt = build_prompt(
            system=self.s.system_prompt,
            context_block=context_block,
            history=self._history(job),
            user_text=job.text,
            max_context_tokens=self.s.model_max_context_tokens,
            max_output_tokens=max_tokens,
        )
        out = Outcome(started=started, citations=citations, input_tokens=prompt.input_tokens)
        batcher = DeltaBatcher(Pacing.from_settings(self.s))
        usage: tuple[int, int] | None = None
        try:
            # options.model picks an offered model (BAD_REQUEST names the choices); the tenant's LoRA
            # adapter comes from the deployment's mapping, never from the client.
            model = models.select(self.d, tenant_id=job.tenant_id, requested=job.options.get("model"))
            for chunk in model.client.stream_chat(
                prompt.messages,
                max_tokens=max_tokens,
                temperature=job.options.get("temperature"),
                top_p=job.options.get("topP"),
                adapter=model.adapter,
            ):
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.text:
                    out.parts.append(chunk.text)
                    if out.ttft_ms is None:
                        out.ttft_ms = int((time.monotonic() - started) * 1000)
                    due = batcher.add(chunk.text, time.monotonic())
                    if due:
                        stream.publish(protocol.Delta(requestId=job.request_id, seq=due[0], text=due[1]))
                        if stream.cancelled:
                            out.finish = "cancelled"
                            break
                if chunk.finish_reason:
                    out.finish = chunk.finish_reason
        except ChatError as exc:
            self._fail(job, stream, batcher, out, exc)
            return
        except Exception:  # the model client's contract is ChatError; anything else is a bug
            logger.exception("model stream failed")
            self._fail(job, stream, batcher, out, Internal("The answer failed; please retry."))
            return
        self._flush(job, stream, batcher)
        if usage is not None:
            out.input_tokens, out.output_tokens = usage
        else:
            out.output_tokens = estimate_tokens(out.text)
        self._finish(job, stream, out)

    def _history(self, job: Job) -> list[dict[str, str]]:
        cached = self.d.cache.history(job.conversation_id)
        if cached is not None:
            return [t for t in cached if t.get("requestId") != job.request_id]
        with self.d.db.transaction() as conn:
            seq = chat_repo.message_seq(conn, job.message_id)
            turns = chat_repo.recent_turns(
                conn, job.conversation_id, before_seq=seq, limit=self.s.history_turns
            )
        self.d.cache.set_history(
            job.conversation_id, turns, keep=self.s.history_turns, ttl_s=self.s.hot_window_ttl_s
        )
        return turns

    def _retrieve(self, job: Job) -> tuple[list[protocol.Citation], str]:
        retriever = self.d.retriever if job.options.get("rag", True) else None
        if retriever is None or self.s.rag_top_k == 0:
            return [], ""
        from lambdas.rag.retriever import fit_passages, format_context

        passages = retriever.retrieve(
            tenant_id=job.tenant_id, query=job.text, k=self.s.rag_top_k, min_score=self.s.rag_min_score
        )
        passages = fit_passages(passages, self.s.rag_context_tokens, estimate_tokens)
        citations = [
            protocol.Citation(
                index=i,
                documentId=p.document_id,
                title=p.title,
                chunk=p.chunk,
                score=round(p.score, 4),
                source=p.source,
            )
            for i, p in enumerate(passages, start=1)
        ]
        return citations, format_context(passages) if passages else ""

    @staticmethod
    def _flush(job: Job, stream: Stream, batcher: DeltaBatcher) -> None:
        while tail := batcher.flush(time.monotonic()):  # text beyond one frame comes out in pieces
            stream.publish(protocol.Delta(requestId=job.request_id, seq=tail[0], text=tail[1]))

    def _fail(self, job: Job, stream: Stream, batcher: DeltaBatcher, out: Outcome, exc: ChatError) -> None:
        self._flush(job, stream, batcher)
        metrics.add_metric(name="GenerationErrors", unit=MetricUnit.Count, value=1)
        logger.warning("generation failed", extra={"request_id": job.request_id, "code": exc.code})
        # The answer was cut short: it is still stored and metered (usage is written once per answer).
        out.finish, out.citations, out.output_tokens = "error", [], estimate_tokens(out.text)
        self._record(job, out)
        stream.publish(protocol.error_frame(exc, job.request_id))

    def _finish(self, job: Job, stream: Stream, out: Outcome) -> None:
        self._record(job, out)
        self.d.cache.append_history(
            job.conversation_id,
            [
                {"role": "user", "content": job.text, "requestId": job.request_id},
                {"role": "assistant", "content": out.text, "requestId": job.request_id},
            ],
            keep=self.s.history_turns,
            ttl_s=self.s.hot_window_ttl_s,
        )
        usage = protocol.Usage(inputTokens=out.input_tokens, outputTokens=out.output_tokens)
        stream.publish(
            protocol.Done(
                requestId=job.request_id,
                messageId=job.answer_id,
                finishReason=out.finish,
                usage=usage,
                citations=out.citations,
            )
        )
        metrics.add_metric(name="OutputTokens", unit=MetricUnit.Count, value=out.output_tokens)
        metrics.add_metric(name="InputTokens", unit=MetricUnit.Count, value=out.input_tokens)
        if out.ttft_ms is not None:
            metrics.add_metric(name="TimeToFirstToken", unit=MetricUnit.Milliseconds, value=out.ttft_ms)

    def _record(self, job: Job, out: Outcome) -> None:
        s = self.s
        cost = (
            (Decimal(out.output_tokens) + Decimal(out.input_tokens) * Decimal(str(s.input_token_cost_ratio)))
            * Decimal(str(s.model_price_per_1k_output_tokens_usd))
            / 1000
        )
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
                    model_profile=s.model_profile,
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
            LimitService(self.d).charge(job.tenant_id, job.user_id, tokens, cost)
        except Exception:
            logger.exception("charging limits failed", extra={"request_id": job.request_id})
