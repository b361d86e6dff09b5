"""Conversation history: list (cursor pagination), get, messages, delete with all its messages."""

from __future__ import annotations

import base64
import binascii
import contextlib
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from lambdas.adapters import chat_repo
from lambdas.api.deps import CacheDep, ChatCallerDep, DatabaseDep, DepsDep
from lambdas.errors import BadRequest

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])


class Conversation(BaseModel):
    id: UUID
    title: str
    messageCount: int
    createdAt: datetime
    updatedAt: datetime


class ConversationPage(BaseModel):
    items: list[Conversation]
    nextCursor: str | None


class Message(BaseModel):
    id: UUID
    seq: int
    role: str
    content: str
    requestId: UUID
    finishReason: str | None
    citations: list[dict[str, Any]]
    inputTokens: int | None
    outputTokens: int | None
    createdAt: datetime


class MessagePage(BaseModel):
    items: list[Message]
    nextAfterSeq: int | None


def _encode_cursor(row: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(f"{row['updated_at'].isoformat()}|{row['id']}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, ident = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(stamp), str(UUID(ident))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("The cursor is not one this API returned.") from None


def _conversation(row: dict[str, Any]) -> Conversation:
    return Conversation(
        id=row["id"],
        title=row["title"],
        messageCount=row["message_count"],
        createdAt=row["created_at"],
        updatedAt=row["updated_at"],
    )


@router.get("", response_model=ConversationPage)
def list_conversations(
    caller: ChatCallerDep,
    db: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ConversationPage:
    """The caller's conversations, the most recently active first, `limit` at a time; pass the page's
    `nextCursor` as `cursor` for the next. The order is by last activity: a conversation that gets a
    message while you page moves up to the first page and is not on a later one (page again from the
    start, or keep the list by id, to see it). Messages page by `seq`, which never moves."""
    with db.transaction() as conn:
        rows = chat_repo.list_conversations(
            conn,
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            limit=limit + 1,
            cursor=_decode_cursor(cursor) if cursor else None,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return ConversationPage(
        items=[_conversation(r) for r in rows], nextCursor=_encode_cursor(rows[-1]) if more and rows else None
    )


@router.get("/{conversation_id}", response_model=Conversation)
def get_conversation(conversation_id: UUID, caller: ChatCallerDep, db: DatabaseDep) -> Conversation:
    with db.transaction() as conn:
        row = chat_repo.get_conversation(
            conn, tenant_id=caller.tenant_id, user_id=caller.user_id, conversation_id=str(conversation_id)
        )
    return _conversation(row)


@router.get("/{conversation_id}/messages", response_model=MessagePage)
def list_messages(
    conversation_id: UUID,
    caller: ChatCallerDep,
    db: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after_seq: Annotated[int, Query(alias="afterSeq", ge=0, le=2**31 - 1)] = 0,
) -> MessagePage:
    with db.transaction() as conn:
        rows = chat_repo.list_messages(
            conn,
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            conversation_id=str(conversation_id),
            after_seq=after_seq,
            limit=limit + 1,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        Message(
            id=r["id"],
            seq=r["seq"],
            role=r["role"],
            content=r["content"],
            requestId=r["request_id"],
            finishReason=r["finish_reason"],
            citations=r["citations"],
            inputTokens=r["input_tokens"],
            outputTokens=r["output_tokens"],
            createdAt=r["created_at"],
        )
        for r in rows
    ]
    return MessagePage(items=items, nextAfterSeq=rows[-1]["seq"] if more and rows else None)


@router.delete("/{conversation_id}", status_code=204, response_class=Response)
def delete_conversation(
    conversation_id: UUID, caller: ChatCallerDep, db: DatabaseDep, cache: CacheDep, d: DepsDep
) -> Response:
    """Delete the conversation; answers still being generated for it stop (they would be metered and
    then discarded: there is nowhere to store them)."""
    with db.transaction() as conn:
        unanswered = chat_repo.delete_conversation(
            conn, tenant_id=caller.tenant_id, user_id=caller.user_id, conversation_id=str(conversation_id)
        )
    cache.drop_history(str(conversation_id))
    for request_id in unanswered:
        with contextlib.suppress(RedisError):  # best effort: the answer is discarded either way
            cache.request_cancel(request_id, d.settings.delta_ttl_s)
    return Response(status_code=204)


class ConversationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)


def _clean_title(raw: str) -> str:
    # One line of printable text: control characters (NUL included, which PostgreSQL refuses) go.
    title = " ".join("".join(ch if ch.isprintable() else " " for ch in raw).split())
    if not title:
        raise BadRequest("title: must contain visible text")
    return title


@router.patch("/{conversation_id}", response_model=Conversation)
def rename_conversation(
    conversation_id: UUID, body: ConversationUpdate, caller: ChatCallerDep, db: DatabaseDep
) -> Conversation:
    with db.transaction() as conn:
        row = chat_repo.rename_conversation(
            conn,
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            conversation_id=str(conversation_id),
            title=_clean_title(body.title),
        )
    return _conversation(row)
