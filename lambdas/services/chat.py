"""The WebSocket use cases that must answer within API Gateway's 29 s: accept a message, resume a
stream, cancel a generation, answer a ping."""

from __future__ import annotations

import contextlib
import time
from decimal import Decimal
from typing import Any

from lambdas import protocol
from lambdas.adapters import chat_repo
from lambdas.adapters.auth import Identity
from lambdas.adapters.cache import RequestRecord
from lambdas.core.prompt import answer_cap, room_left
from lambdas.errors import BadRequest, Forbidden, Internal, NotFound, RequestGone
from lambdas.observability import logger
from lambdas.runtime import Deps
from lambdas.services import models
from lambdas.services.limits import LimitService
from lambdas.services.recovery import RecoveryService

# How long a repeated sendMessage waits for the first attempt of its requestId to be accepted.
ACCEPT_WAIT_S = 5.0
# How long a requestId stays claimed by an attempt that has not been accepted yet: longer than any
# acceptance (sendMessage's function times out at 29 s). An attempt that died before it was accepted
# (its process killed, or Redis stalled so that neither its cleanup nor its update reached it while
# its claim did) frees the requestId after this, not after the day a requestId is remembered; a
# repeat then accepts it anew, and PostgreSQL's unique key still allows one message per requestId.
CLAIM_TTL_S = 60


class ChatService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps
        self.s = deps.settings

    def send(self, connection_id: str, frame: str | protocol.ServerFrame) -> bool:
        data = frame if isinstance(frame, str) else protocol.dump(frame)
        return self.d.connections.post(connection_id, data)

    # ---- sendMessage -----------------------------------------------------------------------------
    def accept(
        self,
        identity: Identity,
        msg: protocol.SendMessage,
        connection_id: str,
        *,
        history: list[dict[str, str]] | None = None,
    ) -> protocol.Ack | None:
        """Accept a message: ack it and enqueue its generation. A repeat of a requestId (any
        connection, any time) is acked again and answered with what happened to it; then None is
        returned, since the ack was already sent."""
        rid = str(msg.request_id)
        if not identity.has_scope("chat"):
            raise Forbidden("This needs the 'chat' scope.")
        cache = self.d.cache
        fresh = RequestRecord(tenant_id=identity.tenant_id, user_id=identity.user_id)
        previous = cache.claim_request(rid, fresh, min(CLAIM_TTL_S, self.s.idempotency_ttl_s))
        if previous is not None:  # a repeat spends no rate budget, unless it retries a failed answer
            return self._repeat(identity, msg, rid, previous, connection_id)
        admitted = False
        try:
            # A refused message leaves nothing behind, not even its requestId (released below).
            models.choose(self.s, msg.options.model)  # an unknown model is refused before it is stored
            # So is a message that could never be answered: with the instructions it leaves no room
            # for the answer (TOO_LARGE), where the worker could only fail it after storing it.
            room_left(
                system=self.s.system_prompt,
                user_text=msg.text,
                max_context_tokens=self.s.model_max_context_tokens,
                max_output_tokens=answer_cap(msg.options.max_tokens, self.s.max_output_tokens),
            )
            LimitService(self.d).admit_message(identity, connection_id, request=msg, history=bool(history))
            admitted = True
            with self.d.db.transaction() as conn:
                accepted = chat_repo.accept_user_message(
                    conn,
                    tenant_id=identity.tenant_id,
                    user_id=identity.user_id,
                    conversation_id=str(msg.conversation_id) if msg.conversation_id else None,
                    request_id=rid,
                    text=msg.text,
                    options=msg.options.model_dump(by_alias=True, exclude_none=True),
                )
                if accepted.created:
                    cache.watch(rid, connection_id, self.s.delta_ttl_s)
                    if history and msg.conversation_id is None:
                        # A new conversation's earlier turns (OpenAI-compatible requests carry them):
                        # in place before the job exists, so the worker reads them.
                        cache.set_history(
                            accepted.conversation_id, history, keep=self.s.history_turns,
                            ttl_s=self.s.hot_window_ttl_s,
                        )
                    # Enqueued inside the transaction: if the send fails, the message is rolled back; if
                    # the commit fails after the send, the worker never sees the message and drops the job
                    # once it is old (GenerationService._stored_request).
                    self.d.queue.enqueue(
                        self._job(identity, msg, accepted, connection_id),
                        group_id=accepted.conversation_id,
                        deduplication_id=rid,
                    )
        except BaseException:
            if admitted:  # give back the quota this message reserved
                self._release(rid, identity)
            with contextlib.suppress(Exception):
                cache.forget_request(rid)  # let the client retry the same requestId
            raise
        record = RequestRecord(
            identity.tenant_id,
            identity.user_id,
            accepted.conversation_id,
            accepted.message_id,
            accepted.answer_id,
            "accepted",
        )
        cache.update_request(rid, record, self.s.idempotency_ttl_s)
        ack = protocol.Ack(
            requestId=rid, conversationId=accepted.conversation_id, messageId=accepted.message_id
        )
        if accepted.created:
            return ack
        # Redis had forgotten it (after the day a requestId is remembered there, or a flush), PostgreSQL
        # had not: a repeat, which generates nothing unless it retries a failed answer (then admitted as
        # that answer, by _follow), so the admission above is given back. Known limit: it was admitted
        # before it was known to be a repeat, so at a limit such a repeat is refused, and its per-minute
        # message buckets are spent (only the reservation comes back).
        self._release(rid, identity)
        self._follow(rid, record, connection_id, retry=True, ack=ack, admit=identity)
        return None

    def _release(self, rid: str, identity: Identity) -> None:
        """Give back what admission reserved for `rid` (best effort: Redis may be down)."""
        with contextlib.suppress(Exception):
            LimitService(self.d).settle(
                rid, 0, Decimal(0), tenant_id=identity.tenant_id, user_id=identity.user_id
            )

    def _repeat(
        self,
        identity: Identity,
        msg: protocol.SendMessage,
        rid: str,
        previous: RequestRecord,
        connection_id: str,
    ) -> protocol.Ack | None:
        """The same requestId again: never a second answer. Re-ack, then answer with what happened."""
        if (previous.tenant_id, previous.user_id) != (identity.tenant_id, identity.user_id):
            raise BadRequest("This requestId was already used; send a new one.")
        deadline = time.monotonic() + ACCEPT_WAIT_S
        while previous.state != "accepted":  # the first attempt is still being accepted: wait for it
            if time.monotonic() >= deadline:
                raise Internal(
                    "This requestId is still being accepted; retry shortly.",
                    retry_after=self.s.dependency_retry_after_s,
                )
            time.sleep(0.05)
            current = self.d.cache.request(rid)
            if current is None:  # the first attempt failed and let the requestId go: accept anew
                return self.accept(identity, msg, connection_id)
            previous = current
        logger.info("duplicate requestId", extra={"request_id": rid})
        ack = protocol.Ack(
            requestId=rid, conversationId=previous.conversation_id, messageId=previous.message_id
        )
        self._follow(rid, previous, connection_id, retry=True, ack=ack, admit=identity)
        return None

    def _follow(
        self,
        rid: str,
        record: RequestRecord,
        connection_id: str,
        after_seq: int = 0,
        *,
        retry: bool = False,
        ack: protocol.Ack | None = None,
        admit: Identity | None = None,
    ) -> int:
        """Put a connection on a request: send its stored outcome when it is finished, else replay
        what was streamed (live frames follow) and enqueue it again when its generation died. Watch
        first, then read: a frame published in between arrives twice, never not at all; clients drop
        deltas whose seq they already have. A repeat's `ack` goes first, unless the request is gone
        (RequestGone is raised: an ack says the message is stored). Returns the frames sent.

        A repeat that retries a failed answer generates again, so it passes the limits as a new
        message does (`admit`: the repeat's sender; a refusal is raised before the ack). It reserves
        for the stored message, which the retry answers, not for the repeat's copy of it, and as a
        follow-up does: the stored turns may fill the prompt."""
        self.d.cache.watch(rid, connection_id, self.s.delta_ttl_s)
        with self.d.db.transaction() as conn:
            answer = chat_repo.stored_answer(conn, record.answer_id)
            unfinished = answer is None or (retry and answer.finish_reason == "error")
            stored = chat_repo.stored_request(conn, message_id=record.message_id) if unfinished else None
        failed = retry and answer is not None and answer.finish_reason == "error" and stored is not None
        # A retry already queued or running holds its own admission: a repeat of it just follows it.
        retrying = failed and not self.d.cache.generation_pending(rid)
        holder: Identity | None = None
        try:
            if ack is not None:
                if answer is None and stored is None and record.state == "accepted":
                    raise RequestGone()  # its conversation was deleted; no ack for it
                if retrying and admit is not None and stored is not None:
                    LimitService(self.d).admit_message(admit, connection_id, request=_as_sent(stored))
                    holder = admit
                self.send(connection_id, ack)
            retried = requeued = False
            if failed and stored is not None:
                # A repeated sendMessage of a failed answer retries it (same answer id; the ledger adds
                # up): in progress again, so what was streamed is replayed and the new attempt follows.
                answer = None
                requeued = RecoveryService(self.d).requeue_if_orphaned(
                    stored, connection_id, retry_failed=True
                )
                retried = True
        except BaseException:
            if holder is not None:
                self._release(rid, holder)
            raise
        if holder is not None and not requeued and not self.d.cache.generation_pending(rid):
            # Nothing was enqueued for this admission, nor by another repeat meanwhile (whose retry then
            # holds it): nothing would settle it.
            self._release(rid, holder)
        if answer is not None:  # finished: its stored outcome, with the whole text, says it all
            return int(self.send(connection_id, _outcome_frame(rid, answer)))
        if stored is None and record.state == "accepted":
            # Accepted, so committed once, and now gone: its conversation was deleted (or lost with a
            # region). No answer will come; what Redis still holds of it is not replayed.
            return int(self.send(connection_id, protocol.error_frame(RequestGone(), rid)))
        # In progress: replay the deltas; the outcome is what the generation publishes live to this
        # watching connection.
        sent = 0
        for raw in self.d.cache.replay(rid) or []:
            frame = protocol.parse_server_frame(raw)
            if not isinstance(frame, protocol.Delta) or frame.seq <= after_seq:
                continue
            if not self.send(connection_id, raw):
                return sent
            sent += 1
        if not retried and stored is not None and stored.age_s >= self.s.generation_lease_s:
            RecoveryService(self.d).requeue_if_orphaned(stored, connection_id)
        return sent

    def _job(
        self, identity: Identity, msg: protocol.SendMessage, accepted: chat_repo.Accepted, connection_id: str
    ) -> dict[str, Any]:
        return {
            "v": 1,
            "requestId": str(msg.request_id),
            "conversationId": accepted.conversation_id,
            "messageId": accepted.message_id,
            "answerId": accepted.answer_id,
            "tenantId": identity.tenant_id,
            "userId": identity.user_id,
            "connectionId": connection_id,
            "options": msg.options.model_dump(by_alias=True, exclude_none=True),
            "enqueuedAt": time.time(),
        }

    # ---- resume --------------------------------------------------------------------------------
    def resume(self, identity: Identity, msg: protocol.Resume, connection_id: str) -> int:
        """Follow a request again from a (new) connection: replay what was missed, then go on live;
        a finished request whose stream expired gets its stored outcome. Returns the frames sent."""
        rid = str(msg.request_id)
        record = self._owned(identity, rid)
        return self._follow(rid, record, connection_id, after_seq=msg.after_seq)

    # ---- cancel --------------------------------------------------------------------------------
    def cancel(self, identity: Identity, msg: protocol.Cancel) -> protocol.ServerFrame | None:
        """Ask the request's generation to stop (its `done` says "cancelled"). A request that has
        already ended is answered with how it ended, one whose conversation was deleted NOT_FOUND: a
        cancel always gets an end. A failed answer being retried is the retry's to end."""
        rid = str(msg.request_id)
        record = self._owned(identity, rid)
        with self.d.db.read() as conn:
            answer = chat_repo.stored_answer(conn, record.answer_id)
            gone = answer is None and chat_repo.stored_request(conn, message_id=record.message_id) is None
        if gone:
            raise RequestGone()
        failed = answer is not None and answer.finish_reason == "error"
        if answer is not None and not (failed and self.d.cache.generation_pending(rid)):
            return _outcome_frame(rid, answer)  # ended, and no retry of it runs or waits
        self.d.cache.request_cancel(rid, self.s.delta_ttl_s)
        return None

    def _owned(self, identity: Identity, rid: str) -> RequestRecord:
        """The request's record, from Redis or, when Redis lost it (or holds only a claim whose
        acceptance has not finished, or never will), rebuilt from PostgreSQL."""
        record = self.d.cache.request(rid)
        if record is not None and record.state != "accepted":
            if (record.tenant_id, record.user_id) != (identity.tenant_id, identity.user_id):
                raise NotFound("No such request.")
            record = None
        if record is None:
            with self.d.db.transaction() as conn:
                stored = chat_repo.stored_request(conn, request_id=rid)
            if stored is not None:
                record = RequestRecord(
                    stored.tenant_id,
                    stored.user_id,
                    stored.conversation_id,
                    stored.message_id,
                    stored.answer_id,
                    "accepted",
                )
        if record is None or (record.tenant_id, record.user_id) != (identity.tenant_id, identity.user_id):
            raise NotFound("No such request.")
        return record


def _as_sent(stored: chat_repo.StoredRequest) -> protocol.SendMessage:
    """The stored message as the sendMessage it came from, in its conversation (what a retry reserves)."""
    return protocol.SendMessage.model_validate(
        {
            "action": "sendMessage",
            "requestId": stored.request_id,
            "conversationId": stored.conversation_id,
            "text": stored.text,
            "options": stored.options,
        }
    )


def _outcome_frame(rid: str, answer: chat_repo.StoredAnswer) -> protocol.ServerFrame:
    """A stored answer as the frame that ends its request: `done` with the whole text, or the error."""
    if answer.finish_reason == "error":
        return protocol.error_frame(
            Internal("This answer failed; send the same sendMessage again to retry it."),
            rid,
        )
    return protocol.Done(
        requestId=rid,
        messageId=answer.answer_id,
        finishReason=answer.finish_reason,
        usage=protocol.Usage(inputTokens=answer.input_tokens, outputTokens=answer.output_tokens),
        citations=[protocol.Citation.model_validate(c) for c in answer.citations],
        text=answer.text,
    )
