"""A request whose conversation was deleted ends in one NOT_FOUND frame, wherever it stood: a resume or
a repeated sendMessage of a finished one (they replayed the deleted answer's deltas from Redis and
then never ended), and a job still queued (it was redelivered until it landed as INTERNAL, "send it
again", and the resend hung). Such a request gives back the quota admission reserved for it, and its
requestId, which the ledger keeps, is never used again. Real PostgreSQL and Redis; the in-process
transports of test_recovery.
"""

from __future__ import annotations

import uuid

import pytest

from lambdas import protocol
from lambdas.adapters import chat_repo
from lambdas.adapters.auth import Identity
from lambdas.errors import RequestGone
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
    with pytest.raises(RequestGone):  # not acked first: an ack says the message is stored
        ChatService(d).accept(identity, again, "c3")
    assert posts(d).of("c3") == []
    cancel = protocol.Cancel(action="cancel", requestId=rid)
    with pytest.raises(RequestGone):  # a cancel, too, gets an end
        ChatService(d).cancel(identity, cancel)


def test_a_cancel_of_a_finished_answer_is_answered_with_how_it_ended(pg_url: str, redis_url: str) -> None:
    """It got no frame at all, while a cancel of an unknown request got NOT_FOUND."""
    d = make_deps(pg_url, redis_url, Model())
    identity, job = accept(d)
    GenerationService(d).run(job)
    cancel = protocol.Cancel(action="cancel", requestId=uuid.UUID(job.request_id))
    ended = ChatService(d).cancel(identity, cancel)
    assert isinstance(ended, protocol.Done) and ended.finish_reason == "stop" and ended.text


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


def _holds(d: Deps, identity: Identity, request_id: str) -> bool:
    """Whether admission's reservation for the request is still held (releasing it tells)."""
    from lambdas.services.limits import LimitService, _tag

    return LimitService(d).store.release(f"{_tag(identity.tenant_id)}:holds", request_id)


def test_a_queued_job_of_a_deleted_conversation_gives_back_its_reservation(
    pg_url: str, redis_url: str
) -> None:
    """identity.md: a reservation is settled when the answer ends (done, cancelled or failed); only a
    dead worker's is left to expire (15 minutes), which would hold the user's quota and their answers
    in flight meanwhile."""
    d = make_deps(pg_url, redis_url, Model(), limits_enabled=True)
    identity, job = accept(d)
    _delete(d, identity, job)
    GenerationService(d).run(job)
    _gone([f for f in posts(d).of("c1") if not isinstance(f, protocol.Ack)], job.request_id)
    assert not _holds(d, identity, job.request_id)


def test_a_repeat_that_redis_forgot_gives_back_its_reservation(pg_url: str, redis_url: str) -> None:
    d = make_deps(pg_url, redis_url, Model(), limits_enabled=True)
    identity, job = accept(d)
    GenerationService(d).run(job)
    d.cache.forget_request(job.request_id)  # a day later: Redis's record has expired, PostgreSQL's not
    rid = uuid.UUID(job.request_id)
    again = protocol.SendMessage(action="sendMessage", requestId=rid, text="How do leases work?")
    assert ChatService(d).accept(identity, again, "c2") is None  # a repeat: acked, nothing generated
    assert not _holds(d, identity, job.request_id)


def test_a_request_id_the_ledger_holds_is_never_used_again(pg_url: str, redis_url: str) -> None:
    """protocol.md: a requestId names one answer for ever. Its ledger row outlives the deleted
    conversation (the usage row is unique by requestId), so a second answer under it could not be
    billed, or would be added to the first tenant's row."""
    d = make_deps(pg_url, redis_url, Model(), limits_enabled=True)
    identity, job = accept(d)
    GenerationService(d).run(job)
    _delete(d, identity, job)
    d.cache.forget_request(job.request_id)
    again = protocol.SendMessage(action="sendMessage", requestId=uuid.UUID(job.request_id), text="Again?")
    other = Identity(tenant_id="t-other", user_id="mallory", scopes=frozenset({"chat"}))
    for who in (identity, other):
        with pytest.raises(RequestGone):  # what a repeat that Redis remembers gets too
            ChatService(d).accept(who, again, "c3")
        assert not _holds(d, who, job.request_id)  # nothing left behind
        assert d.cache.request(job.request_id) is None  # the requestId's claim let go too
    with d.db.transaction() as conn:
        rows = conn.execute(
            "SELECT tenant_id FROM usage_records WHERE request_id = %s", (job.request_id,)
        ).fetchall()
    assert [r["tenant_id"] for r in rows] == [identity.tenant_id]

