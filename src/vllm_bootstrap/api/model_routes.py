"""Model profiles over HTTP: PUT, GET, DELETE /models/{name}, GET /models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from vllm_bootstrap.models.profile import ModelProfile
from vllm_bootstrap.models.store import ProfileStore

router = APIRouter()


def _profiles(request: Request) -> ProfileStore:
    profiles: ProfileStore = request.app.state.profiles
    return profiles


@router.put("/models/{name:path}")
async def put_profile(name: str, request: Request) -> dict[str, Any]:
    """Add or replace the profile `name` (the body: every field but `name`)."""
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    if body.get("name", name) != name:
        raise HTTPException(400, f"the body's name {body['name']!r} is not the path's {name!r}")
    try:
        profile = ModelProfile.model_validate({**body, "name": name})
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None
    _profiles(request).put(profile, source="api")
    return profile.to_document()


@router.get("/models")
async def list_profiles(request: Request) -> list[dict[str, Any]]:
    return [profile.to_document() for profile in _profiles(request).all()]


@router.get("/models/{name:path}")
async def get_profile(name: str, request: Request) -> dict[str, Any]:
    profile = _profiles(request).get(name)
    if profile is None:
        raise HTTPException(404, f"no model profile named {name!r}")
    return profile.to_document()


@router.delete("/models/{name:path}")
async def delete_profile(name: str, request: Request) -> dict[str, Any]:
    if not _profiles(request).delete(name):
        raise HTTPException(404, f"no model profile named {name!r}")
    return {"name": name, "deleted": True}
