"""Recovery: a request that was accepted but whose generation died is enqueued again.

A generation holds a short lease in Redis, renewed while it runs (GenerationService). A request with
no live lease, no stored answer and an accepted user message is an orphan: its worker died, its queue
message was lost, or the whole service stopped. It is enqueued again, rebuilt from PostgreSQL alone,
by the sweeper (every `sweep_interval_s` locally, on a schedule in the cloud), by `resume` and by a
repeated `sendMessage`. The answer keeps its id (derived from the user message), so a retry can never
store two answers, and a job that finds its answer stored ends at once.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from redis.exceptions import RedisError

from lambdas.adapters import chat_repo
from lambdas.observability import logger, metrics
from lambdas.runtime import Deps

# How far back the sweeper looks: older requests are past the idempotency window anyway.
SWEEP_HORIZON_S = 86_400
SWEEP_BATCH = 200


def job_for(stored: chat_repo.StoredRequest, connection_id: str) -> dict[str, Any]:
    """The generation job of a stored user message (the same shape sendMessage enqueues)."""
    return {
        "v": 1,
        "requestId": stored.request_id,
        "conversationId": stored.conversation_id,
        "messageId": stored.message_id,
        "answerId": stored.answer_id,
        "tenantId": stored.tenant_id,
        "userId": stored.user_id,
        "connectionId": connection_id,
        "options": stored.options,
        "enqueuedAt": time.time(),
    }


class RecoveryService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps
        self.s = deps.settings

    def requeue_if_orphaned(
        self, stored: chat_repo.StoredRequest, connection_id: str = "", *, retry_failed: bool = False
    ) -> bool:
        """Enqueue the request again when nothing is generating it and it has no answer (or, with
        `retry_failed`, only a failed one: a client retrying its request). At most one re-enqueue per
        request per lease (several resumes at once enqueue once)."""
        cache = self.d.cache
        if cache.generation_owner(stored.request_id) is not None:
            return False  # a live (or lately dead) worker holds it; its lease decides
        with self.d.db.transaction() as conn:
            answered = chat_repo.answer_final if retry_failed else chat_repo.answer_exists
            if answered(conn, stored.answer_id):
                return False
        if not cache.mark_requeued(stored.request_id, ttl_s=self.s.generation_lease_s * 2):
            return False
        if connection_id:
            cache.watch(stored.request_id, connection_id, self.s.delta_ttl_s)
        # A group of its own: the conversation's group may still hold the dead delivery in flight, and
        # a new deduplication id, since SQS drops a repeated one for five minutes.
        self.d.queue.enqueue(
            job_for(stored, connection_id),
            group_id=f"{stored.conversation_id}.retry",
            deduplication_id=f"{stored.request_id}.{time.time_ns()}",
        )
        logger.info("orphaned request enqueued again", extra={"request_id": stored.request_id})
        metrics.add_metric(name="RequestsRequeued", unit=MetricUnit.Count, value=1)
        return True

    def sweep(self, *, min_age_s: float | None = None) -> int:
        """Enqueue again every orphan accepted at least `min_age_s` ago; returns how many."""
        age = self.s.orphan_after_s if min_age_s is None else min_age_s
        with self.d.db.transaction() as conn:
            candidates = chat_repo.unanswered(
                conn, older_than_s=age, newer_than_s=SWEEP_HORIZON_S, limit=SWEEP_BATCH
            )
        requeued = 0
        for stored in candidates:
            try:
                requeued += self.requeue_if_orphaned(stored, self._watcher(stored.request_id))
            except RedisError:
                logger.warning("sweep stopped: Redis is unavailable")
                break
        return requeued

    def _watcher(self, request_id: str) -> str:
        """A connection that watches the request, if any (so frames of the new attempt reach it)."""
        watchers = self.d.cache.watchers(request_id)
        return watchers[0] if watchers else ""
