"""A request whose conversation was deleted ends in one NOT_FOUND frame, wherever it stood: a resume or
a repeated sendMessage of a finished one (they replayed the deleted answer's deltas from Redis and
then never ended), and a job still queued (it was redelivered until it landed as INTERNAL, "send it
again", and the resend hung). Real PostgreSQL and Redis; the in-process transports of test_recovery.
"""

from __future__ import annotations

import uuid

from lambdas import protocol
from lambdas.adapters import chat_repo
from lambdas.adapters.auth import Identity
from lambdas.runtime import Deps
from lambdas.services.chat import ChatService
from lambdas.services.generation import GenerationService, Job
from tests.functional.test_recovery import Model, accept, make_deps, posts


def _delete(d: Deps, identity: Identity, job: Job) -> None:
    with d.db.transaction() as conn:
        chat_repo.delete_conversation(
            conn, tenant_id=identity.tenant_id, user_id=identity.user_id, conversation_id=job.conversation_id
        )


def _gone(frames: list[protocol.ServerFrame], request_id: str) -> None:
    assert len(frames) == 1, frames
    error = frames[0]
    assert isinstance(error, protocol.Error)
    assert (error.code, error.request_id) == ("NOT_FOUND", request_id)
    assert "deleted" in error.message


def test_resume_and_repeat_of_a_deleted_answer_end_in_not_found(pg_url: str, redis_url: str) -> None:
    d = make_deps(pg_url, redis_url, Model())
    identity, job = accept(d)
    GenerationService(d).run(job)
    assert isinstance(posts(d).of("c1")[-1], protocol.Done)
    _delete(d, identity, job)

    rid = uuid.UUID(job.request_id)
    ChatService(d).resume(identity, protocol.Resume(action="resume", requestId=rid, afterSeq=0), "c2")
    _gone(posts(d).of("c2"), job.request_id)  # not the deleted answer's deltas

    again = protocol.SendMessage(action="sendMessage", requestId=rid, text="How do leases work?")
    assert ChatService(d).accept(identity, again, "c3") is None  # acked by the repeat itself
    frames = posts(d).of("c3")
    assert isinstance(frames[0], protocol.Ack)
    _gone(frames[1:], job.request_id)


def test_a_job_whose_conversation_was_deleted_while_queued_is_dropped_with_not_found(
    pg_url: str, redis_url: str
) -> None:
    model = Model()
    d = make_deps(pg_url, redis_url, model)
    identity, job = accept(d)
    _delete(d, identity, job)

    GenerationService(d).run(job)  # returns: a raise would have the queue deliver it again

    _gone([f for f in posts(d).of("c1") if not isinstance(f, protocol.Ack)], job.request_id)
    assert model.calls == 0
