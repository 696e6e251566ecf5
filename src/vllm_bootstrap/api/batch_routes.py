"""OpenAI's Files and Batches API under /v1, so the official `openai` client works as is.

Its own small FastAPI app: errors take OpenAI's shape (`{"error": {message, type, param,
code}}`), and uploads stream to disk instead of passing the control plane's 1 MiB body
limit (they have their own, VLLM_BOOTSTRAP_MAX_FILE_BYTES).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from vllm_bootstrap.asgi import BodyTooLarge, ClientGone, read_body
from vllm_bootstrap.batches.files import FileDirectory, FileInUse
from vllm_bootstrap.batches.multipart import StorageFull, UploadRefused, UploadTooLarge
from vllm_bootstrap.batches.service import (
    Batches,
    BatchNotFound,
    BatchRefused,
    InputFileNotFound,
    NotCancellable,
)
from vllm_bootstrap.batches.store import BatchWriteFailed, Page

MAX_JSON_BODY_BYTES = 64 * 1024
router = APIRouter(prefix="/v1")


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


class BatchRequest(BaseModel):
    # Fields OpenAI adds later are accepted and ignored, as the official client may send them.
    model_config = ConfigDict(extra="ignore")

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, Any] | None = None


def _files(request: Request) -> FileDirectory:
    files: FileDirectory = request.app.state.files
    return files


def _batches(request: Request) -> Batches:
    batches: Batches = request.app.state.batches
    return batches


def _listing(page: Page, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": page.has_more,
    }


@router.post("/files")
async def upload_file(request: Request) -> dict[str, Any]:
    """multipart/form-data with `purpose=batch` and `file`, streamed to disk."""
    try:
        record = await _files(request).upload(
            request.receive, request.headers.get("content-type", "").encode()
        )
    except ClientGone:
        raise OpenAIError(400, "the upload was cut off", "invalid_request") from None
    return record.to_public()


@router.get("/files")
async def list_files(
    request: Request,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    after: str | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    page = _files(request).list(purpose, limit, after, newest_first=order == "desc")
    return _listing(page, [record.to_public() for record in page.items])


@router.get("/files/{file_id}")
async def get_file(file_id: str, request: Request) -> dict[str, Any]:
    return _file_or_404(request, file_id).to_public()


@router.get("/files/{file_id}/content")
async def file_content(file_id: str, request: Request) -> FileResponse:
    record = _file_or_404(request, file_id)
    if not record.path.is_file():  # deleted from disk by hand
        raise OpenAIError(404, f"the content of file {file_id} is gone", "file_not_found")
    return FileResponse(record.path, media_type="application/jsonl", filename=record.filename)


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, request: Request) -> dict[str, Any]:
    _file_or_404(request, file_id)
    try:
        _files(request).delete(file_id)
    except FileInUse:
        message = f"file {file_id} is the input of a batch that has not ended: cancel it first"
        raise OpenAIError(409, message, "file_in_use") from None
    return {"id": file_id, "object": "file", "deleted": True}


@router.post("/batches")
async def create_batch(request: Request) -> dict[str, Any]:
    try:
        raw = await read_body(request.receive, MAX_JSON_BODY_BYTES)
        body = BatchRequest.model_validate_json(raw)
    except BodyTooLarge:
        message = f"request body over {MAX_JSON_BODY_BYTES} bytes"
        raise OpenAIError(413, message, "request_too_large") from None
    except ClientGone:
        raise OpenAIError(400, "the request was cut off", "invalid_request") from None
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    batch = _batches(request).create(
        body.input_file_id, body.endpoint, body.completion_window, body.metadata
    )
    return batch.to_public()


@router.get("/batches")
async def list_batches(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> dict[str, Any]:
    page = _batches(request).list(limit, after)
    return _listing(page, [batch.to_public() for batch in page.items])


@router.get("/batches/{batch_id}")
async def get_batch(batch_id: str, request: Request) -> dict[str, Any]:
    return _batches(request).get(batch_id).to_public()


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, request: Request) -> dict[str, Any]:
    return _batches(request).cancel(batch_id).to_public()


def _file_or_404(request: Request, file_id: str):  # type: ignore[no-untyped-def]
    record = _files(request).get(file_id)
    if record is None:
        raise OpenAIError(404, f"no file with id {file_id!r}", "file_not_found")
    return record


def batch_api(batches: Batches, files: FileDirectory) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)
    app.include_router(router)
    app.state.batches = batches
    app.state.files = files
    _install_errors(app)
    return app


# --- errors in OpenAI's shape --------------------------------------------------------------

_STATUS = {
    UploadTooLarge: 413,
    StorageFull: 507,
    UploadRefused: 400,
    InputFileNotFound: 404,
    NotCancellable: 409,
    BatchRefused: 400,
}


def _error(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    payload = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(payload, status_code=status)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def openai_error(_request: Request, exc: OpenAIError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.code, exc.param)

    @app.exception_handler(UploadRefused)
    async def upload_refused(_request: Request, exc: UploadRefused) -> JSONResponse:
        return _error(_status_of(exc), exc.message, exc.code)

    @app.exception_handler(BatchRefused)
    async def batch_refused(_request: Request, exc: BatchRefused) -> JSONResponse:
        code = "not_found" if isinstance(exc, InputFileNotFound) else "invalid_request"
        return _error(_status_of(exc), exc.message, code, exc.param)

    @app.exception_handler(BatchWriteFailed)
    async def storage_busy(_request: Request, exc: BatchWriteFailed) -> JSONResponse:
        message = f"{exc}; nothing was changed, retry shortly"
        return _error(503, message, "storage_unavailable")

    @app.exception_handler(BatchNotFound)
    async def batch_not_found(_request: Request, exc: BatchNotFound) -> JSONResponse:
        return _error(404, f"no batch with id {exc.args[0]!r}", "batch_not_found")

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else str(exc)
        return _error(400, message, "invalid_request", where or None)

    @app.exception_handler(404)
    async def no_route(_request: Request, _exc: Exception) -> JSONResponse:
        return _error(404, "no such route under /v1/files or /v1/batches", "not_found")

    @app.exception_handler(405)
    async def wrong_method(request: Request, _exc: Exception) -> JSONResponse:
        return _error(405, f"{request.method} is not allowed here", "method_not_allowed")


def _status_of(exc: Exception) -> int:
    return next(status for kind, status in _STATUS.items() if isinstance(exc, kind))
