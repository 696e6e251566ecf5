"""Domain errors become HTTP statuses here, and only here."""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from vllm_bootstrap.launches.registry import LaunchNotFound
from vllm_bootstrap.supervision.errors import (
    InvalidLaunch,
    LaunchRefused,
    ResourceConflict,
    Unavailable,
)
from vllm_bootstrap.supervision.gpus import GPUDiscoveryError

STATUS_OF_REFUSAL: dict[type[LaunchRefused], int] = {
    InvalidLaunch: 400,
    ResourceConflict: 409,
    Unavailable: 503,
}


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(LaunchRefused, _refused)  # type: ignore[arg-type]
    app.add_exception_handler(LaunchNotFound, _not_found)  # type: ignore[arg-type]
    app.add_exception_handler(GPUDiscoveryError, _gpus_unavailable)  # type: ignore[arg-type]


async def _refused(_request: Request, exc: LaunchRefused) -> JSONResponse:
    status = next(code for kind, code in STATUS_OF_REFUSAL.items() if isinstance(exc, kind))
    return JSONResponse(status_code=status, content={"detail": exc.message})


async def _not_found(_request: Request, exc: LaunchNotFound) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": f"no launch with id {exc.args[0]!r}"})


async def _gpus_unavailable(_request: Request, exc: GPUDiscoveryError) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": str(exc)})


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
