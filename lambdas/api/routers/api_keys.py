"""API keys of the caller's tenant: create (the secret is shown once), list, revoke. Admin scope."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from lambdas.adapters.identity_repo import ApiKeyRow
from lambdas.api.deps import Caller, DepsDep, require_scope
from lambdas.services.api_keys import KNOWN_SCOPES, ApiKeyService

router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"])
AdminDep = Annotated[Caller, Depends(require_scope("admin"))]
Scope = Literal["chat", "finance", "admin", "documents:write"]


def _chat_only() -> list[Scope]:
    return ["chat"]


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(default_factory=_chat_only, min_length=1, max_length=len(KNOWN_SCOPES))
    expiresInDays: int | None = Field(default=None, ge=1, le=3650, strict=True)  # "5" is no number


class ApiKey(BaseModel):
    id: UUID
    prefix: str
    name: str
    scopes: list[str]
    createdBy: str
    createdAt: datetime
    expiresAt: datetime | None
    revokedAt: datetime | None
    lastUsedAt: datetime | None


class CreatedApiKey(ApiKey):
    key: str = Field(description="The whole key. It is shown only in this response; store it now.")


class ApiKeyList(BaseModel):
    items: list[ApiKey]


def _key(row: ApiKeyRow) -> dict[str, object]:
    return {"id": row.id, "prefix": row.prefix, "name": row.name, "scopes": list(row.scopes),
            "createdBy": row.created_by, "createdAt": row.created_at, "expiresAt": row.expires_at,
            "revokedAt": row.revoked_at, "lastUsedAt": row.last_used_at}


@router.post("", status_code=201, response_model=CreatedApiKey)
def create_key(body: CreateKey, caller: AdminDep, d: DepsDep) -> CreatedApiKey:
    created = ApiKeyService(d).create(caller, name=body.name, scopes=list(body.scopes),
                                      expires_in_days=body.expiresInDays)
    return CreatedApiKey.model_validate({**_key(created.row), "key": created.key})


@router.get("", response_model=ApiKeyList)
def list_keys(caller: AdminDep, d: DepsDep) -> ApiKeyList:
    return ApiKeyList(items=[ApiKey.model_validate(_key(r)) for r in ApiKeyService(d).list(caller.tenant_id)])


@router.delete("/{key_id}", status_code=204, response_class=Response)
def revoke_key(key_id: UUID, caller: AdminDep, d: DepsDep) -> Response:
    ApiKeyService(d).revoke(caller.tenant_id, str(key_id))
    return Response(status_code=204)
