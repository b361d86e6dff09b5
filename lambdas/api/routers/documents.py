"""Documents for retrieval: upload (multipart file or JSON text), list, delete with their chunks.

Every query is scoped to the caller's tenant; another tenant's document answers 404, exactly like
one that does not exist. Chat users read; writing or deleting needs the `documents:write` scope (or
`admin`), since every colleague's answers quote what is written here. Each write records its writer, in the
transaction that writes (an upload that changes nothing records nothing).
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from lambdas.api.deps import Caller, CallerDep, ChatCallerDep, DepsDep
from lambdas.errors import BadRequest, Forbidden, NotFound, TooLarge
from lambdas.rag.embeddings import embedder_from_settings
from lambdas.rag.ingest import IngestResult, IngestService
from lambdas.rag.parsing import MAX_DOCUMENT_BYTES, DocumentRejected, size_label
from lambdas.rag.stores import store_from_settings
from lambdas.runtime import Deps
from lambdas.validation import has_control

router = APIRouter(prefix="/v1/documents", tags=["documents"])
DOCUMENTS_WRITE = "documents:write"


def require_writer(caller: CallerDep) -> Caller:
    if caller.has_scope(DOCUMENTS_WRITE) or caller.has_scope("admin"):
        return caller
    raise Forbidden(f"Writing or deleting documents needs the {DOCUMENTS_WRITE!r} scope (or 'admin').")


WriterDep = Annotated[Caller, Depends(require_writer)]

_services: dict[int, tuple[Deps, IngestService]] = {}
_services_lock = threading.Lock()


def get_ingest(d: DepsDep) -> IngestService:
    """One ingestion service per process dependencies (the embedder and store clients are reused)."""
    with _services_lock:
        held = _services.get(id(d))
        if held is None or held[0] is not d:
            retriever = d.retriever
            store = retriever.store if retriever is not None else store_from_settings(d.settings, d.db)
            held = (d, IngestService(d.db, embedder_from_settings(d.settings), store))
            _services[id(d)] = held
        return held[1]


IngestDep = Annotated[IngestService, Depends(get_ingest)]


class TextDocument(BaseModel):
    source: str = Field(min_length=1, max_length=1024)
    title: str | None = Field(default=None, max_length=300)
    text: str = Field(min_length=1, max_length=5_000_000)


class Ingested(BaseModel):
    id: str
    source: str
    title: str
    chunks: int
    deduplicated: bool
    replaced: bool


class Document(BaseModel):
    id: str
    source: str
    title: str
    mime: str
    chunks: int
    contentHash: str
    createdAt: datetime
    updatedAt: datetime


class DocumentPage(BaseModel):
    items: list[Document]


def _ingested(result: IngestResult) -> Ingested:
    return Ingested(
        id=result.document_id,
        source=result.source,
        title=result.title,
        chunks=result.chunks,
        deduplicated=result.deduplicated,
        replaced=result.replaced,
    )


@router.post(
    "",
    response_model=Ingested,
    status_code=201,
    responses={200: {"description": "Already indexed (same content)"}, 400: {}, 413: {}},
)
async def create_document(
    request: Request, response: Response, caller: WriterDep, service: IngestDep
) -> Ingested:
    """Multipart form with a `file` field (optional `source`), or JSON `{source, title?, text}`."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    try:
        if kind == "multipart/form-data":
            result = await _from_form(request, caller, service)
        elif kind == "application/json":
            doc = _text_document(await request.body())
            result = await run_in_threadpool(
                service.ingest_text,
                tenant_id=caller.tenant_id,
                source=doc.source,
                title=doc.title,
                text=doc.text,
                writer=caller.user_id,
            )
        else:
            raise BadRequest("Send multipart/form-data with a `file` field, or JSON {source, title, text}.")
    except DocumentRejected as exc:
        if exc.details.get("reason") == "too_large":
            raise TooLarge(exc.message) from None
        raise
    if result.deduplicated:  # nothing was written, so no writer is recorded
        response.status_code = 200
    return _ingested(result)


async def _from_form(request: Request, caller: Caller, service: IngestService) -> IngestResult:
    declared = int(request.headers.get("content-length") or 0)
    if declared > MAX_DOCUMENT_BYTES + 64 * 1024:
        raise TooLarge(f"The upload is larger than the limit of {size_label(MAX_DOCUMENT_BYTES)}.")
    form = await request.form(max_files=1, max_fields=4)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise BadRequest("The form has no `file` field with a file in it.")
    data = await upload.read(MAX_DOCUMENT_BYTES + 1)
    source_field = form.get("source")
    source = source_field if isinstance(source_field, str) and source_field else (upload.filename or "")
    if not source:
        raise BadRequest("The upload has no file name; send a `source` field.")
    if has_control(source):
        raise BadRequest("source: control characters such as NUL are not allowed.")
    try:
        return await run_in_threadpool(
            service.ingest_file,
            tenant_id=caller.tenant_id,
            source=source,
            data=data,
            mime=upload.content_type,
            writer=caller.user_id,
        )
    finally:
        await upload.close()


def _text_document(body: bytes) -> TextDocument:
    try:
        return TextDocument.model_validate_json(body)
    except ValidationError as exc:
        first: Any = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BadRequest(f"{where}: {first['msg']}" if where else str(first["msg"])) from None


@router.get("", response_model=DocumentPage)
def list_documents(
    caller: ChatCallerDep,
    service: IngestDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> DocumentPage:
    rows = service.list_documents(caller.tenant_id, limit=limit, offset=offset)
    return DocumentPage(
        items=[
            Document(
                id=r.id,
                source=r.source,
                title=r.title,
                mime=r.mime,
                chunks=r.chunk_count,
                contentHash=r.content_hash,
                createdAt=r.created_at,
                updatedAt=r.updated_at,
            )
            for r in rows
        ]
    )


@router.delete("/{document_id}", status_code=204, response_class=Response)
def delete_document(document_id: str, caller: WriterDep, service: IngestDep) -> Response:
    if not service.delete_document(caller.tenant_id, document_id):
        raise NotFound("No such document.")
    return Response(status_code=204)
