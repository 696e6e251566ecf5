"""The one error table: every domain error a client can meet, with its HTTP status, its
code and whether it says Retry-After, and the two shapes it is rendered in.

Packages raise their own domain errors (str(error) is the message a client reads); only
this module knows HTTP. Under /v1 every error takes OpenAI's shape, which the official
clients parse into their exception classes (`{"error": {message, type, param, code}}`);
everywhere else the control plane's own (`{"detail": message}`). The data plane's errors
are raised before its response starts and rendered by `ErrorEdge`; the FastAPI apps get
the same table through `install`, and the middlewares in front of everything (access key,
cross-site guard) render through `send_error`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from vllm_bootstrap.asgi import send_json
from vllm_bootstrap.batches import (
    BatchNotFound,
    BatchRefused,
    BatchWriteFailed,
    FileExpired,
    InputFileNotFound,
    NotCancellable,
    StorageFull,
    UploadRefused,
    UploadTooLarge,
)
from vllm_bootstrap.downloads import (
    CacheInUse,
    CacheUnusable,
    DiskTooSmall,
    DownloadNotFound,
    GatedRepo,
    HubOffline,
    HubUnreachable,
    InvalidRepo,
    InvalidRevision,
    NotCached,
    RepoNotFound,
    RevisionNotFound,
    TransferFailed,
)
from vllm_bootstrap.keys import KeyNotFound, KeyWriteFailed, NameTaken, RateLimited
from vllm_bootstrap.launches import LaunchNotFound
from vllm_bootstrap.models import (
    LoadTimedOut,
    ModelLoadFailed,
    NoSuchProfile,
    ProfileBusy,
    QueueFull,
)
from vllm_bootstrap.serving import (
    OPENAI_PREFIX,
    BodiesOverLimit,
    KeyedBodyUnreadable,
    LaunchAsleep,
    LaunchNotReady,
    NoModelInBody,
    NoReadyReplica,
    NoSuchLaunch,
    RoutedBodyTooLarge,
    SwapperOnlyRoute,
    UnknownModel,
    UpstreamUnreachable,
)
from vllm_bootstrap.supervision import (
    GPUDiscoveryError,
    InvalidLaunch,
    ResourceConflict,
    Unavailable,
)

RETRY_AFTER_SECONDS = "10"


@dataclass(frozen=True)
class Answer:
    status: int
    code: str | None  # None: the error's own `code` attribute
    retry_after: bool = False
    # A refusal never reached vLLM and is counted as one; an unreachable vLLM was forwarded.
    refusal: bool = True
    hint: str = ""


class ApiError(Exception):
    """An error of the API edge itself (a malformed body, a file in use)."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


TABLE: dict[type[Exception], Answer] = {
    # launches
    InvalidLaunch: Answer(400, "invalid_launch"),
    ResourceConflict: Answer(409, "resource_conflict"),
    Unavailable: Answer(503, "unavailable"),
    GPUDiscoveryError: Answer(503, "gpus_unavailable"),
    LaunchNotFound: Answer(404, "launch_not_found"),
    # the data plane
    RoutedBodyTooLarge: Answer(413, "request_too_large"),
    BodiesOverLimit: Answer(503, "server_busy", retry_after=True),
    NoModelInBody: Answer(400, "missing_model"),
    UnknownModel: Answer(404, "model_not_found"),
    NoReadyReplica: Answer(503, "model_loading", retry_after=True),
    NoSuchLaunch: Answer(404, "launch_not_found"),
    LaunchAsleep: Answer(409, "launch_asleep"),
    LaunchNotReady: Answer(409, "launch_not_ready"),
    SwapperOnlyRoute: Answer(403, "swapper_only_route"),
    KeyedBodyUnreadable: Answer(400, "invalid_request"),
    UpstreamUnreachable: Answer(502, "upstream_unreachable", refusal=False),
    # model profiles
    QueueFull: Answer(429, "model_queue_full", retry_after=True),
    LoadTimedOut: Answer(503, "model_loading", retry_after=True),
    ModelLoadFailed: Answer(503, "model_load_failed", retry_after=True),
    NoSuchProfile: Answer(404, "profile_not_found"),
    ProfileBusy: Answer(409, "profile_busy"),
    # files and batches
    UploadTooLarge: Answer(413, None),
    StorageFull: Answer(507, None),
    UploadRefused: Answer(400, None),
    InputFileNotFound: Answer(404, "not_found"),
    FileExpired: Answer(404, "file_expired"),
    NotCancellable: Answer(409, "invalid_request"),
    BatchRefused: Answer(400, "invalid_request"),
    BatchNotFound: Answer(404, "batch_not_found"),
    BatchWriteFailed: Answer(
        503, "storage_unavailable", hint="; nothing was changed, retry shortly"
    ),
    # downloads and the cache
    InvalidRepo: Answer(400, "invalid_repo"),
    InvalidRevision: Answer(400, "invalid_revision"),
    CacheUnusable: Answer(503, "cache_unavailable"),
    RepoNotFound: Answer(404, "model_not_found"),
    RevisionNotFound: Answer(404, "revision_not_found"),
    GatedRepo: Answer(403, "gated_repo"),
    HubOffline: Answer(409, "hub_offline"),
    HubUnreachable: Answer(502, "hub_unreachable", retry_after=True),
    DiskTooSmall: Answer(507, "insufficient_storage"),
    TransferFailed: Answer(502, "download_failed"),
    DownloadNotFound: Answer(404, "download_not_found"),
    NotCached: Answer(404, "not_in_cache"),
    CacheInUse: Answer(409, "cache_in_use"),
    # scoped keys (Retry-After and the x-ratelimit headers are the error's own)
    RateLimited: Answer(429, "rate_limit_exceeded", retry_after=True),
    NameTaken: Answer(409, "key_name_taken"),
    KeyNotFound: Answer(404, "key_not_found"),
    KeyWriteFailed: Answer(
        503, "storage_unavailable", retry_after=True, hint="; nothing was changed, retry shortly"
    ),
}


@dataclass(frozen=True)
class Error:
    """One error as a client gets it."""

    status: int
    message: str
    code: str
    param: str | None = None
    retry_after: bool = False
    refusal: bool = True
    headers: tuple[tuple[bytes, bytes], ...] = ()
    retry_after_seconds: int | None = None


def error_of(exc: Exception) -> Error | None:
    """The table's answer for `exc` (its closest listed class); None: not a domain error."""
    if isinstance(exc, ApiError):
        return Error(exc.status, str(exc), exc.code, exc.param)
    for kind in type(exc).__mro__:
        answer = TABLE.get(kind)
        if answer is not None:
            return Error(
                answer.status,
                f"{_message(exc)}{answer.hint}",
                answer.code or getattr(exc, "code", "error"),
                getattr(exc, "param", None),
                answer.retry_after,
                answer.refusal,
                tuple(getattr(exc, "headers", ())),
                getattr(exc, "retry_after_seconds", None),
            )
    return None


def _message(exc: Exception) -> str:
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) else str(exc)


# --- the two shapes -------------------------------------------------------------------------


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIX) or path == OPENAI_PREFIX.rstrip("/")


def openai_type(status: int) -> str:
    """OpenAI's error `type` for a status: one rule for every /v1 answer."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def body_of(error: Error, openai_shape: bool) -> dict[str, object]:
    if not openai_shape:
        return {"detail": error.message}
    return {
        "error": {
            "message": error.message,
            "type": openai_type(error.status),
            "param": error.param,
            "code": error.code,
        }
    }


def headers_of(error: Error) -> list[tuple[bytes, bytes]]:
    if not error.retry_after:
        return list(error.headers)
    seconds = error.retry_after_seconds or RETRY_AFTER_SECONDS
    return [(b"retry-after", str(seconds).encode()), *error.headers]


async def send_error(
    send: Send, scope: Scope, error: Error, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer `error` in the shape its path calls for (plain ASGI)."""
    body = body_of(error, is_openai_path(scope.get("path", "")))
    await send_json(send, error.status, body, [*headers_of(error), *headers])


# --- where errors are caught ----------------------------------------------------------------

RefusalCounter = Callable[[str, str], None]


class ErrorEdge:
    """Renders the domain errors a plain ASGI app (the proxy, /v1) raises before its
    response started, counting refusals by route and code."""

    def __init__(self, app: ASGIApp, route: str, count_refusal: RefusalCounter) -> None:
        self.app = app
        self._route = route
        self._count_refusal = count_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            error = error_of(exc)
            if error is None:
                raise
            if error.refusal:
                self._count_refusal(self._route, error.code)
            await send_error(send, scope, error)


def install(app: FastAPI, openai_shape: bool) -> None:
    """The table, for a FastAPI app whose every route answers in one shape."""

    async def domain_error(_request: Request, exc: Exception) -> JSONResponse:
        error = error_of(exc)
        assert error is not None
        return _response(error, openai_shape)

    for kind in (*TABLE, ApiError):
        app.add_exception_handler(kind, domain_error)
    if openai_shape:
        app.add_exception_handler(RequestValidationError, _openai_validation_error)  # type: ignore[arg-type]
        app.add_exception_handler(HTTPException, _openai_http_error)  # type: ignore[arg-type]
    else:
        app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]


def _response(error: Error, openai_shape: bool) -> JSONResponse:
    headers = {name.decode(): value.decode() for name, value in headers_of(error)}
    return JSONResponse(body_of(error, openai_shape), error.status, headers or None)


async def _openai_http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own errors under /v1 (no such route, wrong method), in OpenAI's shape."""
    if exc.status_code == 404:
        error = Error(404, f"no such route: {request.url.path}", "not_found")
    elif exc.status_code == 405:
        error = Error(405, f"{request.method} is not allowed here", "method_not_allowed")
    else:
        error = Error(exc.status_code, str(exc.detail), "invalid_request")
    return _response(error, openai_shape=True)


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with one readable sentence per problem, e.g. "body.gpu_ids.0: must be >= 0"."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        problems.append(str(_plain(f"{where}: {error.get('msg', 'invalid')}")))
    return JSONResponse(
        status_code=422,
        content={"detail": "; ".join(problems), "errors": _plain(exc.errors())},
    )


async def _openai_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 naming the first problem's field as `param`, as OpenAI answers."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    problem = first.get("msg", "invalid request")
    # Never str(exc): it quotes the input, which may be the whole (malformed) body.
    message = f"{where}: {problem}" if where else f"the body is not valid: {problem}"
    return _response(Error(400, str(_plain(message)), "invalid_request", where or None), True)


def _plain(errors: object) -> object:
    """Validation errors as strict JSON. The offending input is not echoed back (it may be
    megabytes, NaN or a lone surrogate), nor the context (it may hold exception objects)."""
    if isinstance(errors, dict):
        return {
            key: _plain(value)
            for key, value in errors.items()
            if key not in ("input", "ctx", "url")
        }
    if isinstance(errors, list | tuple):
        return [_plain(item) for item in errors]
    if isinstance(errors, bool | int) or errors is None:
        return errors
    if isinstance(errors, float) and math.isfinite(errors):
        return errors
    return str(errors).encode("utf-8", "replace").decode("utf-8")
