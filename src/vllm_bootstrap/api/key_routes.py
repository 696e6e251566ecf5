"""Scoped keys and their usage over HTTP: POST, GET, PATCH, DELETE /keys (the admin's), GET
/usage (the admin's: every key) and GET /usage/me (any key: its own)."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from vllm_bootstrap.api.errors import ApiError
from vllm_bootstrap.api.services import ServicesDep
from vllm_bootstrap.keys import GROUPS, ApiKey, KeyNotFound, key_of

router = APIRouter(tags=["keys"])
Name = Annotated[
    StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
]
ModelName = Annotated[StrictStr, Field(min_length=1, max_length=512)]
Limit = Annotated[StrictInt, Field(ge=1, le=1_000_000_000)]
Priority = Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)]
Scope = Literal["inference", "batches", "admin"]


class KeyFields(BaseModel):
    """What a key may reach and how much: every field of POST /keys but its name."""

    model_config = ConfigDict(extra="forbid")

    scopes: Annotated[list[Scope], Field(min_length=1, max_length=3)] = ["inference"]
    models: Annotated[list[ModelName], Field(max_length=1000)] | None = Field(
        default=None, description="The models it may use (served or profile names); null: all."
    )
    max_concurrency: Limit | None = None
    requests_per_minute: Limit | None = None
    tokens_per_minute: Limit | None = None
    priority: Priority = Field(
        default=0, description="vLLM's request priority on priority-scheduling launches."
    )
    expires_at: datetime | None = Field(
        default=None, description="When it stops working: Unix seconds or ISO 8601."
    )

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # a time without a zone means the same everywhere
        if value is not None and value.timestamp() <= time.time():
            raise ValueError("must be in the future")
        return value


class NewKey(KeyFields):
    name: Name


class KeyChanges(KeyFields):
    name: Name | None = None


def _stored(fields: KeyFields, names: set[str]) -> dict[str, Any]:
    """The fields `names`, as the key record keeps them."""
    values: dict[str, Any] = {}
    for name in names:
        value = getattr(fields, name)
        if name == "name" and value is None:
            raise ApiError(422, "name: cannot be null", "invalid_request", "name")
        if name == "scopes" or (name == "models" and value is not None):
            value = frozenset(value)
        elif name == "expires_at" and value is not None:
            value = int(value.timestamp())
        values[name] = value
    return values


@router.post("/keys", status_code=201)
async def create_key(body: NewKey, services: ServicesDep) -> dict[str, Any]:
    """A new scoped key. Its secret (`key`) is in this answer only: it is kept as a hash."""
    key, secret = services.keys.create(_stored(body, set(NewKey.model_fields)))
    return {**key.to_public(), "key": secret}


@router.get("/keys")
async def list_keys(services: ServicesDep) -> dict[str, Any]:
    return {"object": "list", "data": [_shown(key, services) for key in services.keys.all()]}


@router.get("/keys/{key_id}")
async def get_key(key_id: str, services: ServicesDep) -> dict[str, Any]:
    return _shown(services.keys.get(key_id), services)


@router.patch("/keys/{key_id}")
async def update_key(key_id: str, body: KeyChanges, services: ServicesDep) -> dict[str, Any]:
    """Change what a key may reach or its limits; its next request sees the change."""
    return _shown(services.keys.update(key_id, _stored(body, body.model_fields_set)), services)


@router.delete("/keys/{key_id}")
async def delete_key(key_id: str, services: ServicesDep) -> dict[str, Any]:
    """Revoke the key at once (requests it has in flight finish); its usage stays."""
    key = services.keys.delete(key_id)
    services.limits.forget(key.id)
    services.usage.forget(key.id)
    return {"id": key.id, "object": "api_key", "deleted": True}


def _shown(key: ApiKey, services: ServicesDep) -> dict[str, Any]:
    return {**key.to_public(), "in_flight": services.limits.in_flight(key.id)}


Day = Annotated[str | None, Query(description="YYYY-MM-DD (UTC), included.")]
GroupBy = Annotated[str, Query(description="Comma-separated: key, model, day.")]


@router.get("/usage")
async def usage(
    services: ServicesDep,
    key: Annotated[str | None, Query(description="A key's id or name.")] = None,
    model: str | None = None,
    since: Day = None,
    until: Day = None,
    group_by: GroupBy = "key,model,day",
) -> dict[str, Any]:
    """Requests, tokens, errors, batch lines and load GPU-seconds of the scoped keys."""
    key_id = _key_id(key, services) if key is not None else None
    return _usage(services, key_id, model, since, until, group_by)


@router.get("/usage/me")
async def my_usage(
    request: Request,
    services: ServicesDep,
    model: str | None = None,
    since: Day = None,
    until: Day = None,
    group_by: GroupBy = "model,day",
) -> dict[str, Any]:
    """The usage of the key this request came with."""
    key = key_of(request.scope)
    if key is None:
        message = "the access key has no usage of its own: GET /usage shows every key's"
        raise ApiError(400, message, "not_a_scoped_key")
    return _usage(services, key.id, model, since, until, group_by)


def _usage(
    services: ServicesDep,
    key_id: str | None,
    model: str | None,
    since: str | None,
    until: str | None,
    group_by: str,
) -> dict[str, Any]:
    groups = tuple(part.strip() for part in group_by.split(",") if part.strip())
    unknown = [group for group in groups if group not in GROUPS]
    if unknown or len(set(groups)) != len(groups):
        message = f"group_by takes a comma-separated set of {', '.join(GROUPS)}; got {group_by!r}"
        raise ApiError(422, message, "invalid_request", "group_by")
    for name, day in (("since", since), ("until", until)):
        if day is not None and not _is_day(day):
            raise ApiError(422, f"{name} must be a day, YYYY-MM-DD", "invalid_request", name)
    rows = services.usage.query(key_id, model, since, until, groups, services.keys.name_of)
    return {"object": "list", "group_by": list(groups), "data": rows}


def _is_day(text: str) -> bool:
    try:
        return len(text) == 10 and date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def _key_id(wanted: str, services: ServicesDep) -> str:
    """The id of the key `wanted` names (by id or name; a live key's name first, else a
    deleted one's, whose usage is still there)."""
    key_id = services.keys.id_of(wanted)
    if key_id is None:
        raise KeyNotFound(wanted)
    return key_id
