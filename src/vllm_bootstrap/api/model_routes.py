"""Model profiles over HTTP: PUT, GET, DELETE /models/{name}, GET /models, and explicit
loading: POST /models/{name}/load and /unload."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from vllm_bootstrap.models.profile import ModelProfile
from vllm_bootstrap.models.store import ProfileStore
from vllm_bootstrap.models.swapper import ModelSwapper
from vllm_bootstrap.serving.openai import OnDemandRefusal

router = APIRouter()
WaitQuery = Annotated[bool, Query(description="Answer once it is done.")]
# Unloads started without waiting run on; a reference keeps each task alive until then.
_unloading: set[asyncio.Task[None]] = set()


def _profiles(request: Request) -> ProfileStore:
    profiles: ProfileStore = request.app.state.profiles
    return profiles


def _swapper(request: Request) -> ModelSwapper:
    swapper: ModelSwapper = request.app.state.swapper
    return swapper


def _view(request: Request, profile: ModelProfile) -> dict[str, Any]:
    return {**profile.to_document(), "status": _swapper(request).status(profile.name)}


def _profile(request: Request, name: str) -> ModelProfile:
    profile = _profiles(request).get(name)
    if profile is None:
        raise HTTPException(404, f"no model profile named {name!r}")
    return profile


@router.put("/models/{name:path}")
async def put_profile(name: str, request: Request) -> dict[str, Any]:
    """Add or replace the profile `name` (the body: every field but `name`). A launch of the
    profile keeps running as it was started; the change applies to its next load."""
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
    _swapper(request).forget_failure(name)
    return _view(request, profile)


@router.get("/models")
async def list_profiles(request: Request) -> list[dict[str, Any]]:
    return [_view(request, profile) for profile in _profiles(request).all()]


@router.post("/models/{name:path}/load")
async def load_profile(name: str, request: Request, wait: WaitQuery = False) -> dict[str, Any]:
    """Load the profile now (evicting others if it must); with wait, answer once it is ready."""
    profile = _profile(request, name)
    swapper = _swapper(request)
    swapper.load(name, "an explicit load")
    if wait:
        try:
            await swapper.serve(name, "an explicit load")
        except OnDemandRefusal as refusal:
            headers = {"Retry-After": "10"} if refusal.status in (429, 503) else None
            raise HTTPException(refusal.status, refusal.message, headers) from None
    return _view(request, profile)


@router.post("/models/{name:path}/unload")
async def unload_profile(name: str, request: Request, wait: WaitQuery = False) -> dict[str, Any]:
    """Free the profile's GPUs: to sleep if it has `sleep` (a sleeping one is stopped)."""
    profile = _profile(request, name)
    swapper = _swapper(request)
    launch = swapper.launch_of(name)
    if launch is not None and launch.launch_id in swapper.unloader.busy:
        raise HTTPException(
            409, f"launch {launch.launch_id} is being woken or unloaded already: retry shortly"
        )
    if launch is not None:
        unloading = asyncio.create_task(swapper.unload(launch, "an explicit unload"))
        _unloading.add(unloading)
        unloading.add_done_callback(_unloading.discard)
        if wait:
            await asyncio.shield(unloading)
    return _view(request, profile)


@router.get("/models/{name:path}")
async def get_profile(name: str, request: Request) -> dict[str, Any]:
    return _view(request, _profile(request, name))


@router.delete("/models/{name:path}")
async def delete_profile(name: str, request: Request) -> dict[str, Any]:
    """Forget the profile; a launch of it runs on until it is stopped (or evicted)."""
    if not _profiles(request).delete(name):
        raise HTTPException(404, f"no model profile named {name!r}")
    _swapper(request).forget_failure(name)  # a load waiting for GPUs gives up by itself
    return {"name": name, "deleted": True}
