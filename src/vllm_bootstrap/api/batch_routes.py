"""OpenAI's Files and Batches API under /v1, so the official `openai` client works as is.

Its own small FastAPI app: errors take OpenAI's shape (`{"error": {message, type, param,
code}}`), and uploads stream to disk instead of passing the control plane's 1 MiB body
limit (they have their own, VLLM_BOOTSTRAP_MAX_FILE_BYTES).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from starlette.requests import Request

from vllm_bootstrap.api import errors
from vllm_bootstrap.api.errors import ApiError
from vllm_bootstrap.api.services import Services, ServicesDep, provide
from vllm_bootstrap.asgi import BodyTooLarge, ClientGone, read_body
from vllm_bootstrap.batches import MAX_EXPIRY_SECONDS, FileInUse, Page, check_not_expired
from vllm_bootstrap.keys import ADMIN, key_of

MAX_JSON_BODY_BYTES = 64 * 1024
router = APIRouter(prefix="/v1")


class ExpiresAfter(BaseModel):
    """OpenAI's expiration policy: `seconds` after the file's creation (OpenAI takes 3600 to
    2592000; shorter ones are allowed here)."""

    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: Annotated[StrictInt, Field(ge=1, le=MAX_EXPIRY_SECONDS)]


class BatchRequest(BaseModel):
    # Fields OpenAI adds later are accepted and ignored, as the official client may send them.
    model_config = ConfigDict(extra="ignore")

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, Any] | None = None
    output_expires_after: ExpiresAfter | None = None


def _listing(page: Page, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": page.has_more,
    }


def _owner(request: Request) -> str | None:
    """The scoped key a request came with, whose files and batches it makes."""
    key = key_of(request.scope)
    return key.id if key is not None else None


def _viewer(request: Request) -> str | None:
    """Whose files and batches a request sees: a scoped key its own; None: every one (the
    access key, and keys with the admin scope)."""
    key = key_of(request.scope)
    return key.id if key is not None and ADMIN not in key.scopes else None


# The upload is streamed to disk by hand (batches/multipart.py), so FastAPI cannot see its
# form: it is described here, as OpenAI's.
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["purpose", "file"],
                    "properties": {
                        "purpose": {"type": "string", "enum": ["batch"]},
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "JSONL: one request line of OpenAI's batch format each",
                        },
                    },
                }
            }
        },
    }
}


@router.post("/files", openapi_extra=_UPLOAD_BODY)
async def upload_file(request: Request, services: ServicesDep) -> dict[str, Any]:
    """multipart/form-data with `purpose=batch` and `file`, streamed to disk."""
    try:
        record = await services.files.upload(
            request.receive, request.headers.get("content-type", "").encode(), _owner(request)
        )
    except ClientGone:
        raise ApiError(400, "the upload was cut off", "invalid_request") from None
    return record.to_public()


@router.get("/files")
async def list_files(
    request: Request,
    services: ServicesDep,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    page = services.files.list(purpose, limit, after, order == "desc", _viewer(request))
    return _listing(page, [record.to_public() for record in page.items])


@router.get("/files/{file_id}")
async def get_file(file_id: str, request: Request, services: ServicesDep) -> dict[str, Any]:
    return _file_or_404(services, file_id, request).to_public()


@router.get("/files/{file_id}/content")
async def file_content(file_id: str, request: Request, services: ServicesDep) -> FileResponse:
    record = _file_or_404(services, file_id, request)
    check_not_expired(record)
    if not record.path.is_file():  # deleted from disk by hand
        raise ApiError(404, f"the content of file {file_id} is gone", "file_not_found")
    return FileResponse(record.path, media_type="application/jsonl", filename=record.filename)


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, request: Request, services: ServicesDep) -> dict[str, Any]:
    _file_or_404(services, file_id, request)
    try:
        services.files.delete(file_id)
    except FileInUse:
        message = f"file {file_id} is the input of a batch that has not ended: cancel it first"
        raise ApiError(409, message, "file_in_use") from None
    return {"id": file_id, "object": "file", "deleted": True}


@router.post("/batches")
async def create_batch(request: Request, services: ServicesDep) -> dict[str, Any]:
    try:
        raw = await read_body(request.receive, MAX_JSON_BODY_BYTES)
        body = BatchRequest.model_validate_json(raw)
    except BodyTooLarge:
        message = f"request body over {MAX_JSON_BODY_BYTES} bytes"
        raise ApiError(413, message, "request_too_large") from None
    except ClientGone:
        raise ApiError(400, "the request was cut off", "invalid_request") from None
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    keep = body.output_expires_after.seconds if body.output_expires_after else None
    batch = services.batches.create(
        body.input_file_id,
        body.endpoint,
        body.completion_window,
        body.metadata,
        keep,
        owner=_owner(request),
        viewer=_viewer(request),
    )
    return batch.to_public()


@router.get("/batches")
async def list_batches(
    request: Request,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> dict[str, Any]:
    page = services.batches.list(limit, after, _viewer(request))
    return _listing(page, [batch.to_public() for batch in page.items])


@router.get("/batches/{batch_id}")
async def get_batch(batch_id: str, request: Request, services: ServicesDep) -> dict[str, Any]:
    return services.batches.get(batch_id, _viewer(request)).to_public()


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, request: Request, services: ServicesDep) -> dict[str, Any]:
    return services.batches.cancel(batch_id, _viewer(request)).to_public()


def _file_or_404(services: Services, file_id: str, request: Request):  # type: ignore[no-untyped-def]
    record = services.files.get(file_id, _viewer(request))
    if record is None:
        raise ApiError(404, f"no file with id {file_id!r}", "file_not_found")
    return record


def batch_api(services: Services) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)
    app.include_router(router)
    provide(app, services)
    errors.install(app, openai_shape=True)
    return app
