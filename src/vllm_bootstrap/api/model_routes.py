"""Model profiles over HTTP: PUT, GET, DELETE /models/{name}, GET /models, and explicit
loading: POST /models/{name}/load and /unload. The model wing (models/swapper.py) does the
work and raises domain errors, which errors.py renders."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from vllm_bootstrap.api.errors import ApiError
from vllm_bootstrap.api.services import ServicesDep
from vllm_bootstrap.models import ModelProfile

router = APIRouter()
WaitQuery = Annotated[bool, Query(description="Answer once it is done.")]


@router.put("/models/{name:path}")
async def put_profile(name: str, request: Request, services: ServicesDep) -> dict[str, Any]:
    """Add or replace the profile `name` (the body: every field but `name`). A launch of the
    profile keeps running as it was started; the change applies to its next load."""
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nests too deep
        raise ApiError(400, "the body must be a JSON object", "invalid_body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", "invalid_body")
    if body.get("name", name) != name:
        message = f"the body's name {body['name']!r} is not the path's {name!r}"
        raise ApiError(400, message, "invalid_body")
    try:
        profile = ModelProfile.model_validate({**body, "name": name})
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None
    return services.swapper.put(profile)


@router.get("/models")
async def list_profiles(services: ServicesDep) -> list[dict[str, Any]]:
    return services.swapper.statuses()


@router.post("/models/{name:path}/load")
async def load_profile(name: str, services: ServicesDep, wait: WaitQuery = False) -> dict[str, Any]:
    """Load the profile now (evicting others if it must); with wait, answer once it is ready."""
    services.swapper.load(name, "an explicit load")
    if wait:
        await services.swapper.serve(name, "an explicit load")
    return services.swapper.status(name)


@router.post("/models/{name:path}/unload")
async def unload_profile(
    name: str, services: ServicesDep, wait: WaitQuery = False
) -> dict[str, Any]:
    """Free the profile's GPUs: to sleep if it has `sleep` (a sleeping one is stopped)."""
    await services.swapper.unload(name, wait)
    return services.swapper.status(name)


@router.get("/models/{name:path}")
async def get_profile(name: str, services: ServicesDep) -> dict[str, Any]:
    return services.swapper.status(name)


@router.delete("/models/{name:path}")
async def delete_profile(name: str, services: ServicesDep) -> dict[str, Any]:
    """Forget the profile; a launch of it runs on until it is stopped (or evicted)."""
    services.swapper.delete(name)
    return {"name": name, "deleted": True}
