"""SQL for conversations, messages and the usage ledger. Every query is scoped to a tenant."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

from lambdas.errors import BadRequest, NotFound, RequestGone

Conn = psycopg.Connection[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Accepted:
    conversation_id: str
    message_id: str
    answer_id: str
    created: bool  # False when this requestId had already been stored (a retry)


def accept_user_message(
    conn: Conn,
    *,
    tenant_id: str,
    user_id: str,
    conversation_id: str | None,
    request_id: str,
    text: str,
    options: dict[str, Any] | None = None,
) -> Accepted:
    """Store the user's message (creating the conversation if needed) inside the caller's transaction.
    The writes go together (psycopg's pipeline mode): one round trip, not two or three."""
    # One round trip: the message this requestId stored, if any, and whether the ledger holds it. The
    # ledger outlives a deleted conversation, and a requestId names one answer for ever: used again
    # (by anyone) once its message is gone, its answer could be neither billed nor told apart.
    existing = conn.execute(
        "SELECT m.id, m.conversation_id, m.tenant_id, c.user_id,"
        " EXISTS (SELECT 1 FROM usage_records u WHERE u.request_id = %s) AS billed"
        " FROM (SELECT 1) AS one LEFT JOIN messages m ON m.request_id = %s AND m.role = 'user'"
        " LEFT JOIN conversations c ON c.id = m.conversation_id",
        (request_id, request_id),
    ).fetchone()
    assert existing is not None  # one row, whatever the joins find
    if existing["id"] is None:
        if existing["billed"]:  # its message is gone with its conversation
            raise RequestGone()
    else:
        if existing["tenant_id"] != tenant_id or existing["user_id"] != user_id:
            raise BadRequest("This requestId was already used; send a new one.")
        return Accepted(
            str(existing["conversation_id"]),
            str(existing["id"]),
            str(uuid.uuid5(existing["id"], "answer")),
            created=False,
        )
    new = not conversation_id
    if conversation_id:
        row = conn.execute(
            "SELECT id, message_count FROM conversations WHERE id = %s AND tenant_id = %s AND user_id = %s"
            " FOR UPDATE",
            (conversation_id, tenant_id, user_id),
        ).fetchone()
        if row is None:
            raise NotFound("No such conversation.")
        seq = row["message_count"] + 1
    else:
        conversation_id, seq = str(uuid.uuid4()), 1
    message_id = uuid.uuid4()
    with conn.pipeline():  # sent together; an error of either is raised here
        if new:
            conn.execute(
                "INSERT INTO conversations (id, tenant_id, user_id, title, message_count)"
                " VALUES (%s, %s, %s, %s, 1)",
                (conversation_id, tenant_id, user_id, _title(text)),
            )
        conn.execute(
            "INSERT INTO messages (id, conversation_id, tenant_id, seq, role, content, request_id, options)"
            " VALUES (%s, %s, %s, %s, 'user', %s, %s, %s)",
            (message_id, conversation_id, tenant_id, seq, text, request_id, json.dumps(options or {})),
        )
        if not new:
            conn.execute(
                "UPDATE conversations SET message_count = %s, updated_at = now() WHERE id = %s",
                (seq, conversation_id),
            )
    # The answer's id is derived from the user message's id, so every retry names the same answer.
    return Accepted(conversation_id, str(message_id), str(uuid.uuid5(message_id, "answer")), created=True)


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 80 else line[:77].rstrip() + "..."


def user_message_exists(conn: Conn, message_id: str) -> bool:
    return conn.execute("SELECT 1 FROM messages WHERE id = %s", (message_id,)).fetchone() is not None


def answer_exists(conn: Conn, answer_id: str) -> bool:
    return conn.execute("SELECT 1 FROM messages WHERE id = %s", (answer_id,)).fetchone() is not None


def answer_final(conn: Conn, answer_id: str) -> bool:
    """An answer is stored and did not fail (a failed one may still be retried)."""
    row = conn.execute(
        "SELECT 1 FROM messages WHERE id = %s AND finish_reason IS DISTINCT FROM 'error'", (answer_id,)
    ).fetchone()
    return row is not None


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """A user message as stored: who sent it, where, and with which options. The worker trusts this,
    never the job's copy; recovery rebuilds a job from it."""

    message_id: str
    request_id: str
    conversation_id: str
    tenant_id: str
    user_id: str
    text: str
    options: dict[str, Any]
    age_s: float
    # Its answer is stored and final (read with the message, so the worker needs no second query).
    answered: bool = False
    # Its place in the conversation (1: the first message, so there is no history to read).
    seq: int = 0

    @property
    def answer_id(self) -> str:
        return str(uuid.uuid5(uuid.UUID(self.message_id), "answer"))


_STORED_REQUEST = (
    "SELECT m.id, m.request_id, m.conversation_id, m.tenant_id, c.user_id, m.content, m.options, m.seq,"
    " EXTRACT(EPOCH FROM now() - m.created_at)::float8 AS age_s,"
    " EXISTS (SELECT 1 FROM messages a WHERE a.request_id = m.request_id AND a.role = 'assistant'"
    "  AND a.finish_reason IS DISTINCT FROM 'error') AS answered"
    " FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.role = 'user' AND "
)


def _stored(row: dict[str, Any]) -> StoredRequest:
    return StoredRequest(
        message_id=str(row["id"]),
        request_id=str(row["request_id"]),
        conversation_id=str(row["conversation_id"]),
        tenant_id=str(row["tenant_id"]),
        user_id=str(row["user_id"]),
        text=str(row["content"]),
        options=dict(row["options"] or {}),
        age_s=float(row["age_s"]),
        answered=bool(row["answered"]),
        seq=int(row["seq"]),
    )


def stored_request(
    conn: Conn, *, message_id: str | None = None, request_id: str | None = None
) -> StoredRequest | None:
    """The user message by its id or its requestId."""
    if message_id is not None:
        row = conn.execute(_STORED_REQUEST + "m.id = %s", (message_id,)).fetchone()
    else:
        row = conn.execute(_STORED_REQUEST + "m.request_id = %s", (request_id,)).fetchone()
    return _stored(row) if row else None


def unanswered(conn: Conn, *, older_than_s: float, newer_than_s: float, limit: int) -> list[StoredRequest]:
    """User messages without an answer, oldest first, in an age window (recovery)."""
    rows = conn.execute(
        _STORED_REQUEST + "m.created_at < now() - make_interval(secs => %s)"
        " AND m.created_at > now() - make_interval(secs => %s)"
        " AND NOT EXISTS (SELECT 1 FROM messages a"
        "  WHERE a.request_id = m.request_id AND a.role = 'assistant')"
        " ORDER BY m.created_at LIMIT %s",
        (older_than_s, newer_than_s, limit),
    ).fetchall()
    return [_stored(row) for row in rows]


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    answer_id: str
    text: str
    finish_reason: str
    citations: list[dict[str, Any]]
    input_tokens: int
    output_tokens: int


def stored_answer(conn: Conn, answer_id: str) -> StoredAnswer | None:
    row = conn.execute(
        "SELECT id, content, finish_reason, citations, input_tokens, output_tokens FROM messages"
        " WHERE id = %s AND role = 'assistant'",
        (answer_id,),
    ).fetchone()
    if row is None:
        return None
    return StoredAnswer(
        answer_id=str(row["id"]),
        text=str(row["content"]),
        finish_reason=str(row["finish_reason"] or "stop"),
        citations=list(row["citations"] or []),
        input_tokens=int(row["input_tokens"] or 0),
        output_tokens=int(row["output_tokens"] or 0),
    )


def recent_turns(
    conn: Conn, conversation_id: str, *, before_seq: int | None, limit: int
) -> list[dict[str, str]]:
    rows = conn.execute(
        "SELECT role, content FROM (SELECT role, content, seq FROM messages"
        " WHERE conversation_id = %s AND (%s::int IS NULL OR seq < %s)"
        " ORDER BY seq DESC LIMIT %s) t ORDER BY seq",
        (conversation_id, before_seq, before_seq, limit),
    ).fetchall()
    return [{"role": r["role"], "content": r["content"]} for r in rows]


def message_seq(conn: Conn, message_id: str) -> int | None:
    row = conn.execute("SELECT seq FROM messages WHERE id = %s", (message_id,)).fetchone()
    return int(row["seq"]) if row else None


@dataclass(frozen=True, slots=True)
class Answer:
    answer_id: str
    conversation_id: str
    tenant_id: str
    user_id: str
    request_id: str
    text: str
    finish_reason: str
    citations: list[dict[str, Any]]
    input_tokens: int
    output_tokens: int
    model_profile: str
    region: str
    ttft_ms: int | None
    duration_ms: int
    cost_usd: Decimal


def record_answer(conn: Conn, a: Answer) -> bool:
    """Store the answer and its usage row once; False when they were already stored (a redelivery).

    An answer that failed (`finish_reason = 'error'`) is the one row a later answer of the same
    request may replace: a retry of a failed request keeps its answer id and position, and its usage
    row adds up what every attempt used."""
    seq_row = conn.execute(
        "SELECT message_count FROM conversations WHERE id = %s FOR UPDATE", (a.conversation_id,)
    ).fetchone()
    stored_message, count = False, None
    if seq_row is not None:  # the conversation may have been deleted while the answer streamed
        inserted = conn.execute(
            "INSERT INTO messages (id, conversation_id, tenant_id, seq, role, content, request_id,"
            " finish_reason, citations, input_tokens, output_tokens)"
            " VALUES (%s, %s, %s, %s, 'assistant', %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (request_id, role) DO UPDATE SET content = EXCLUDED.content,"
            " finish_reason = EXCLUDED.finish_reason, citations = EXCLUDED.citations,"
            " input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens"
            " WHERE messages.finish_reason = 'error'"
            " RETURNING seq, (xmax = 0) AS inserted",
            (
                a.answer_id,
                a.conversation_id,
                a.tenant_id,
                seq_row["message_count"] + 1,
                a.text,
                a.request_id,
                a.finish_reason,
                json.dumps(a.citations),
                a.input_tokens,
                a.output_tokens,
            ),
        ).fetchone()
        if inserted:
            stored_message = True
            if inserted["inserted"]:  # not a failed answer replaced in place
                count = inserted["seq"]
    with conn.pipeline():  # the conversation's count and the usage row in one round trip
        if count is not None:
            conn.execute(
                "UPDATE conversations SET message_count = %s, updated_at = now() WHERE id = %s",
                (count, a.conversation_id),
            )
        usage = conn.execute(
            "INSERT INTO usage_records (request_id, tenant_id, user_id, conversation_id, message_id,"
            " model_profile, region, input_tokens, output_tokens, ttft_ms, duration_ms, finish_reason,"
            " cost_usd)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (request_id) DO UPDATE SET"
            " input_tokens = usage_records.input_tokens + EXCLUDED.input_tokens,"
            " output_tokens = usage_records.output_tokens + EXCLUDED.output_tokens,"
            " cost_usd = usage_records.cost_usd + EXCLUDED.cost_usd,"
            " duration_ms = usage_records.duration_ms + EXCLUDED.duration_ms,"
            " ttft_ms = EXCLUDED.ttft_ms, finish_reason = EXCLUDED.finish_reason"
            " WHERE usage_records.finish_reason = 'error'"
            " RETURNING id",
            (
                a.request_id,
                a.tenant_id,
                a.user_id,
                a.conversation_id,
                a.answer_id,
                a.model_profile,
                a.region,
                a.input_tokens,
                a.output_tokens,
                a.ttft_ms,
                a.duration_ms,
                a.finish_reason,
                a.cost_usd,
            ),
        )
    return stored_message or usage.fetchone() is not None


# ---- reads for the REST API ---------------------------------------------------------------------


def list_conversations(
    conn: Conn, *, tenant_id: str, user_id: str, limit: int, cursor: tuple[datetime, str] | None
) -> list[dict[str, Any]]:
    if cursor is None:
        return conn.execute(
            "SELECT id, title, message_count, created_at, updated_at FROM conversations"
            " WHERE tenant_id = %s AND user_id = %s ORDER BY updated_at DESC, id DESC LIMIT %s",
            (tenant_id, user_id, limit),
        ).fetchall()
    return conn.execute(
        "SELECT id, title, message_count, created_at, updated_at FROM conversations"
        " WHERE tenant_id = %s AND user_id = %s AND (updated_at, id) < (%s, %s)"
        " ORDER BY updated_at DESC, id DESC LIMIT %s",
        (tenant_id, user_id, cursor[0], cursor[1], limit),
    ).fetchall()


def get_conversation(conn: Conn, *, tenant_id: str, user_id: str, conversation_id: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT id, title, message_count, created_at, updated_at FROM conversations"
        " WHERE id = %s AND tenant_id = %s AND user_id = %s",
        (conversation_id, tenant_id, user_id),
    ).fetchone()
    if row is None:
        raise NotFound("No such conversation.")
    return row


def list_messages(
    conn: Conn, *, tenant_id: str, user_id: str, conversation_id: str, after_seq: int, limit: int
) -> list[dict[str, Any]]:
    get_conversation(conn, tenant_id=tenant_id, user_id=user_id, conversation_id=conversation_id)
    return conn.execute(
        "SELECT id, seq, role, content, request_id, finish_reason, citations, input_tokens, output_tokens,"
        " created_at FROM messages WHERE conversation_id = %s AND tenant_id = %s AND seq > %s"
        " ORDER BY seq LIMIT %s",
        (conversation_id, tenant_id, after_seq, limit),
    ).fetchall()


def delete_conversation(conn: Conn, *, tenant_id: str, user_id: str, conversation_id: str) -> list[str]:
    """Delete the caller's conversation with its messages; the requestIds of its messages that have no
    answer yet (or a failed one, which a retry may be generating), whose generations should stop."""
    unanswered = conn.execute(
        "SELECT u.request_id FROM messages u JOIN conversations c ON c.id = u.conversation_id"
        " WHERE c.id = %s AND c.tenant_id = %s AND c.user_id = %s AND u.role = 'user'"
        " AND NOT EXISTS (SELECT 1 FROM messages a WHERE a.request_id = u.request_id"
        " AND a.role = 'assistant' AND a.finish_reason <> 'error')",
        (conversation_id, tenant_id, user_id),
    ).fetchall()
    deleted = conn.execute(
        "DELETE FROM conversations WHERE id = %s AND tenant_id = %s AND user_id = %s RETURNING id",
        (conversation_id, tenant_id, user_id),
    ).fetchone()
    if deleted is None:
        raise NotFound("No such conversation.")
    return [str(r["request_id"]) for r in unanswered]


def rename_conversation(
    conn: Conn, *, tenant_id: str, user_id: str, conversation_id: str, title: str
) -> dict[str, Any]:
    """Set the title; `updated_at` is left alone so a rename does not reorder the list."""
    row = conn.execute(
        "UPDATE conversations SET title = %s WHERE id = %s AND tenant_id = %s AND user_id = %s"
        " RETURNING id, title, message_count, created_at, updated_at",
        (title, conversation_id, tenant_id, user_id),
    ).fetchone()
    if row is None:
        raise NotFound("No such conversation.")
    return row
