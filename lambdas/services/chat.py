"""The WebSocket use cases that must answer within API Gateway's 29 s: accept a message, resume a
stream, cancel a generation, answer a ping."""

from __future__ import annotations

import time
from typing import Any

from lambdas import protocol
from lambdas.adapters import chat_repo
from lambdas.adapters.auth import Identity
from lambdas.adapters.cache import RequestRecord
from lambdas.errors import BadRequest, Forbidden, NotFound
from lambdas.observability import logger
from lambdas.runtime import Deps
from lambdas.services.limits import LimitService


class ChatService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps
        self.s = deps.settings

    def send(self, connection_id: str, frame: str | protocol.ServerFrame) -> bool:
        data = frame if isinstance(frame, str) else protocol.dump(frame)
        return self.d.connections.post(connection_id, data)

    # ---- sendMessage -----------------------------------------------------------------------------
    def accept(self, identity: Identity, msg: protocol.SendMessage, connection_id: str) -> protocol.Ack:
        rid = str(msg.request_id)
        if not identity.has_scope("chat"):
            raise Forbidden("This identity may not chat; it needs the 'chat' scope.")
        cache = self.d.cache
        fresh = RequestRecord(tenant_id=identity.tenant_id, user_id=identity.user_id)
        previous = cache.claim_request(rid, fresh, self.s.idempotency_ttl_s)
        if previous is not None:  # a repeat spends no rate budget: it generates nothing
            return self._repeat(identity, rid, previous, connection_id)
        try:
            # A refused message leaves nothing behind, not even its requestId (released below).
            LimitService(self.d).admit_message(identity, connection_id)
            with self.d.db.transaction() as conn:
                accepted = chat_repo.accept_user_message(
                    conn,
                    tenant_id=identity.tenant_id,
                    user_id=identity.user_id,
                    conversation_id=str(msg.conversation_id) if msg.conversation_id else None,
                    request_id=rid,
                    text=msg.text,
                )
                if accepted.created:
                    cache.watch(rid, connection_id, self.s.delta_ttl_s)
                    # Enqueued inside the transaction: if the send fails, the message is rolled back; if
                    # the commit fails after the send, the worker never sees the message and drops the job
                    # once it is old (GenerationService._message_committed).
                    self.d.queue.enqueue(
                        self._job(identity, msg, accepted, connection_id),
                        group_id=accepted.conversation_id,
                        deduplication_id=rid,
                    )
        except BaseException:
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
        if not accepted.created:  # Redis had forgotten it, PostgreSQL had not
            cache.watch(rid, connection_id, self.s.delta_ttl_s)
        return protocol.Ack(
            requestId=rid, conversationId=accepted.conversation_id, messageId=accepted.message_id
        )

    def _repeat(
        self, identity: Identity, rid: str, previous: RequestRecord, connection_id: str
    ) -> protocol.Ack:
        """The same requestId again: never a second answer. Re-ack and follow the first one."""
        if (previous.tenant_id, previous.user_id) != (identity.tenant_id, identity.user_id):
            raise BadRequest("This requestId was already used; send a new one.")
        if previous.state != "accepted":
            raise BadRequest("This requestId is being processed; wait for its ack.")
        self.d.cache.watch(rid, connection_id, self.s.delta_ttl_s)
        logger.info("duplicate requestId", extra={"request_id": rid})
        return protocol.Ack(
            requestId=rid, conversationId=previous.conversation_id, messageId=previous.message_id
        )

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
            "text": msg.text,
            "options": msg.options.model_dump(by_alias=True, exclude_none=True),
            "enqueuedAt": time.time(),
        }

    # ---- resume --------------------------------------------------------------------------------
    def resume(self, identity: Identity, msg: protocol.Resume, connection_id: str) -> int:
        """Follow a request again from a (new) connection: replay what was missed, then go on live.
        Returns the number of frames replayed."""
        rid = str(msg.request_id)
        record = self._owned(identity, rid)
        # Watch first, then replay: a frame published in between arrives twice, never not at all;
        # clients drop deltas whose seq they already have.
        self.d.cache.watch(rid, connection_id, self.s.delta_ttl_s)
        frames = self.d.cache.replay(rid)
        if frames is None:
            if record.state == "accepted" and not self._answered(record):
                return 0  # queued, nothing streamed yet: live frames will follow
            raise NotFound(
                "The stream of this request has expired; read the answer from "
                f"/v1/conversations/{record.conversation_id}/messages."
            )
        sent = 0
        for raw in frames:
            frame = protocol.parse_server_frame(raw)
            if isinstance(frame, protocol.Delta) and frame.seq <= msg.after_seq:
                continue
            if not self.send(connection_id, raw):
                break
            sent += 1
        return sent

    def _answered(self, record: RequestRecord) -> bool:
        with self.d.db.transaction() as conn:
            return chat_repo.answer_exists(conn, record.answer_id)

    # ---- cancel --------------------------------------------------------------------------------
    def cancel(self, identity: Identity, msg: protocol.Cancel) -> None:
        rid = str(msg.request_id)
        self._owned(identity, rid)
        self.d.cache.request_cancel(rid, self.s.delta_ttl_s)

    def _owned(self, identity: Identity, rid: str) -> RequestRecord:
        record = self.d.cache.request(rid)
        if record is None or (record.tenant_id, record.user_id) != (identity.tenant_id, identity.user_id):
            raise NotFound("No such request.")
        return record
