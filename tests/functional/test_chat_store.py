"""The chat's data layer against real PostgreSQL and Redis: one row per message, idempotent answers,
the recent-turns window and per-request delta streams."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal

import pytest

from lambdas.adapters import chat_repo
from lambdas.adapters.cache import Cache, RequestRecord
from lambdas.adapters.db import Database
from lambdas.errors import BadRequest, NotFound


@pytest.fixture(scope="module")
def db(pg_url: str) -> Database:
    return Database(pg_url, max_size=4)


@pytest.fixture(scope="module")
def cache(redis_url: str) -> Cache:
    return Cache.from_url(redis_url)


def _answer(acc: chat_repo.Accepted, rid: str, tenant: str, text: str = "hi") -> chat_repo.Answer:
    return chat_repo.Answer(
        answer_id=acc.answer_id,
        conversation_id=acc.conversation_id,
        tenant_id=tenant,
        user_id="u",
        request_id=rid,
        text=text,
        finish_reason="stop",
        citations=[],
        input_tokens=5,
        output_tokens=2,
        model_profile="local-extractive",
        region="local",
        ttft_ms=3,
        duration_ms=9,
        cost_usd=Decimal("0"),
    )


def test_messages_are_one_row_each_and_a_retried_request_is_stored_once(db: Database) -> None:
    tenant, rid = f"t-{uuid.uuid4()}", str(uuid.uuid4())
    with db.transaction() as conn:
        first = chat_repo.accept_user_message(
            conn, tenant_id=tenant, user_id="u", conversation_id=None, request_id=rid, text="hello"
        )
    with db.transaction() as conn:
        again = chat_repo.accept_user_message(
            conn, tenant_id=tenant, user_id="u", conversation_id=None, request_id=rid, text="hello"
        )
    assert first.created and not again.created
    assert (again.conversation_id, again.message_id, again.answer_id) == (
        first.conversation_id,
        first.message_id,
        first.answer_id,
    )
    with db.transaction() as conn:
        assert chat_repo.record_answer(conn, _answer(first, rid, tenant))
        assert not chat_repo.record_answer(conn, _answer(first, rid, tenant))  # a redelivery
        rows = chat_repo.list_messages(
            conn, tenant_id=tenant, user_id="u", conversation_id=first.conversation_id, after_seq=0, limit=10
        )
        usage = conn.execute(
            "SELECT count(*) AS n FROM usage_records WHERE request_id = %s", (rid,)
        ).fetchone()
    assert [(r["role"], r["seq"]) for r in rows] == [("user", 1), ("assistant", 2)]
    assert usage is not None and usage["n"] == 1


def test_a_request_id_of_another_tenant_is_refused(db: Database) -> None:
    rid = str(uuid.uuid4())
    with db.transaction() as conn:
        chat_repo.accept_user_message(
            conn, tenant_id="t-a", user_id="u", conversation_id=None, request_id=rid, text="mine"
        )
    with pytest.raises(BadRequest), db.transaction() as conn:
        chat_repo.accept_user_message(
            conn, tenant_id="t-b", user_id="u", conversation_id=None, request_id=rid, text="theirs"
        )


def test_another_tenants_conversation_is_not_found_and_nothing_is_written(db: Database) -> None:
    with db.transaction() as conn:
        acc = chat_repo.accept_user_message(
            conn,
            tenant_id="t-own",
            user_id="u",
            conversation_id=None,
            request_id=str(uuid.uuid4()),
            text="secret",
        )
    with pytest.raises(NotFound), db.transaction() as conn:
        chat_repo.accept_user_message(
            conn,
            tenant_id="t-other",
            user_id="u",
            conversation_id=acc.conversation_id,
            request_id=str(uuid.uuid4()),
            text="intrude",
        )
    with db.transaction() as conn:
        count = conn.execute(
            "SELECT message_count FROM conversations WHERE id = %s", (acc.conversation_id,)
        ).fetchone()
    assert count is not None and count["message_count"] == 1


def test_idempotency_record_is_claimed_once(cache: Cache) -> None:
    rid = str(uuid.uuid4())
    record = RequestRecord(tenant_id="t", user_id="u")
    assert cache.claim_request(rid, record, ttl_s=60) is None
    assert cache.claim_request(rid, record, ttl_s=60) == record


def test_delta_stream_replays_in_order_and_reports_watchers_and_cancel(cache: Cache) -> None:
    rid = str(uuid.uuid4())
    assert cache.replay(rid) is None
    cache.watch(rid, "conn-1", ttl_s=60)
    first = cache.publish(rid, '{"seq":1}', ttl_s=60)
    cache.request_cancel(rid, ttl_s=60)
    second = cache.publish(rid, '{"seq":2}', ttl_s=60)
    assert first.watchers == ["conn-1"] and not first.cancelled and second.cancelled
    assert cache.replay(rid) == ['{"seq":1}', '{"seq":2}']


def test_recent_turns_window_keeps_the_last_turns_and_knows_empty_from_missing(cache: Cache) -> None:
    conv = str(uuid.uuid4())
    assert cache.history(conv) is None
    cache.append_history(conv, [{"role": "user", "content": "lost"}], keep=3, ttl_s=60)
    assert cache.history(conv) is None  # not cached: appends are skipped, the DB rebuilds it
    cache.set_history(conv, [], keep=3, ttl_s=60)
    assert cache.history(conv) == []
    for i in range(5):
        cache.append_history(conv, [{"role": "user", "content": str(i)}], keep=3, ttl_s=60)
    assert [t["content"] for t in cache.history(conv) or []] == ["2", "3", "4"]


def test_the_claim_reads_what_the_separate_reads_return_and_nothing_while_another_holds_it(
    cache: Cache,
) -> None:
    rid, conv = str(uuid.uuid4()), str(uuid.uuid4())
    empty = cache.claim_generation_and_start(rid, "me", 30, conv)
    assert empty is not None
    assert (empty.kept, empty.cancelled, empty.frames, empty.history) == (None, False, None, None)
    assert cache.generation_owner(rid) == "me"
    assert cache.claim_generation_and_start(rid, "another", 30, conv) is None  # held: nothing read
    assert cache.generation_owner(rid) == "me"
    cache.release_generation(rid, "me")
    cache.keep_outcome(rid, {"finish": "stop", "text": "kept"}, ttl_s=60)
    cache.request_cancel(rid, ttl_s=60)
    cache.publish(rid, '{"seq":1}', ttl_s=60)
    cache.set_history(conv, [{"role": "user", "content": "hi"}], keep=3, ttl_s=60)
    start = cache.claim_generation_and_start(rid, "me", 30, conv)
    assert start is not None
    assert start.kept == cache.kept_outcome(rid) == {"finish": "stop", "text": "kept"}
    assert start.cancelled is cache.is_cancelled(rid) is True
    assert start.frames == cache.replay(rid) == ['{"seq":1}']
    assert start.history == cache.history(conv) == [{"role": "user", "content": "hi"}]
    cache.release_generation(rid, "me")
    cache.set_history(conv, [], keep=3, ttl_s=60)
    again = cache.claim_generation_and_start(rid, "me", 30, conv)
    assert again is not None and again.history == []  # known empty, not missing

def test_the_conversation_counts_follow_ups_and_replaced_failures_and_outlives_nothing(db: Database) -> None:
    """What the writes sent together (pipeline mode) leave behind: message_count and seq follow every
    stored message, a failed answer replaced in place counts once, and an answer whose conversation
    was deleted while it streamed still leaves its usage row."""
    tenant, rids = f"t-{uuid.uuid4()}", [str(uuid.uuid4()) for _ in range(3)]
    with db.transaction() as conn:
        first = chat_repo.accept_user_message(
            conn, tenant_id=tenant, user_id="u", conversation_id=None, request_id=rids[0], text="one"
        )
        assert chat_repo.record_answer(conn, _answer(first, rids[0], tenant, "a1"))
        second = chat_repo.accept_user_message(
            conn, tenant_id=tenant, user_id="u", conversation_id=first.conversation_id, request_id=rids[1],
            text="two",
        )
        failed = dataclasses.replace(_answer(second, rids[1], tenant, "cut"), finish_reason="error")
        assert chat_repo.record_answer(conn, failed)
        assert chat_repo.record_answer(conn, _answer(second, rids[1], tenant, "a2"))  # the retry replaces it
        count = conn.execute(
            "SELECT message_count FROM conversations WHERE id = %s", (first.conversation_id,)
        ).fetchone()
        rows = chat_repo.list_messages(
            conn, tenant_id=tenant, user_id="u", conversation_id=first.conversation_id, after_seq=0, limit=10
        )
    assert count == {"message_count": 4}
    assert [(r["role"], r["seq"], r["content"]) for r in rows] == [
        ("user", 1, "one"), ("assistant", 2, "a1"), ("user", 3, "two"), ("assistant", 4, "a2")
    ]
    with db.transaction() as conn:
        third = chat_repo.accept_user_message(
            conn, tenant_id=tenant, user_id="u", conversation_id=first.conversation_id, request_id=rids[2],
            text="three",
        )
        conn.execute("DELETE FROM conversations WHERE id = %s", (first.conversation_id,))
        assert chat_repo.record_answer(conn, _answer(third, rids[2], tenant, "a3"))  # its usage is kept
        usage = conn.execute(
            "SELECT count(*) AS n FROM usage_records WHERE request_id = %s", (rids[2],)
        ).fetchone()
        left = conn.execute("SELECT count(*) AS n FROM messages WHERE conversation_id = %s",
                            (first.conversation_id,)).fetchone()
    assert usage == {"n": 1} and left == {"n": 0}
