"""Every request the clients make, described once: method, path, parameters, and how the
answer becomes a typed object. `Client` sends them with httpx.Client, `AsyncClient` with
httpx.AsyncClient; neither repeats a path or a parse."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from vllm_bootstrap.client.models import (
    ApiKey,
    Batch,
    Cache,
    CacheRemoval,
    Download,
    FileObject,
    Gpu,
    Launch,
    LogChunk,
    NewApiKey,
    Node,
    Profile,
    Stats,
    UsageRow,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, Any] | None = None
    json: Any = None
    files: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    request: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        options = {"params": self.params, "json": self.json, "files": self.files, "data": self.data}
        kept = {name: value for name, value in options.items() if value is not None}
        object.__setattr__(self, "request", kept)


def _id(value: str) -> str:
    """An id as one path segment: "/" "?" "#" cannot take the request elsewhere."""
    return quote(value, safe="")


def _name(value: str) -> str:
    """A profile or model name as a path: its "/" stay (names like org/model), the rest is
    escaped; "." and ".." parts are refused, since HTTP clients resolve them and the
    request would go to another route ("../keys/x" is DELETE /keys/x)."""
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise ValueError(f"{value!r} is not a name: it has an empty, '.' or '..' part")
    return quote(value, safe="/")


def _batches(answer: Any) -> list[Batch]:
    return [Batch.model_validate(batch) for batch in answer["data"]]


def _launches(answer: Any) -> list[Launch]:
    return [Launch.model_validate(launch) for launch in answer]


def _profiles(answer: Any) -> list[Profile]:
    return [Profile.model_validate(profile) for profile in answer]


def _keys(answer: Any) -> list[ApiKey]:
    return [ApiKey.model_validate(key) for key in answer["data"]]


def _usage_rows(answer: Any) -> list[UsageRow]:
    return [UsageRow.model_validate(row) for row in answer["data"]]


def _downloads(answer: Any) -> list[Download]:
    return [Download.model_validate(download) for download in answer["data"]]


def _nothing(_answer: Any) -> None:
    return None


def launch(body: dict[str, Any]) -> Call[Launch]:
    return Call("POST", "/launch", Launch.model_validate, json=body)


def status(launch_id: str) -> Call[Launch]:
    return Call("GET", f"/status/{_id(launch_id)}", Launch.model_validate)


def launches(all: bool) -> Call[list[Launch]]:
    return Call("GET", "/launch", _launches, params={"all": all})


def stop(launch_id: str, wait: bool) -> Call[Launch]:
    return Call("POST", f"/stop/{_id(launch_id)}", Launch.model_validate, params={"wait": wait})


def logs(launch_id: str, offset: int) -> Call[LogChunk]:
    return Call(
        "GET", f"/logs/{_id(launch_id)}", LogChunk.model_validate, params={"offset": offset}
    )


def gpus() -> Call[list[Gpu]]:
    return Call("GET", "/gpus", lambda answer: [Gpu.model_validate(gpu) for gpu in answer])


def nodes() -> Call[list[Node]]:
    return Call("GET", "/nodes", lambda answer: [Node.model_validate(node) for node in answer])


def stats() -> Call[Stats]:
    return Call("GET", "/stats", Stats.model_validate)


def put_profile(name: str, fields: dict[str, Any]) -> Call[Profile]:
    return Call("PUT", f"/models/{_name(name)}", Profile.model_validate, json=fields)


def profiles() -> Call[list[Profile]]:
    return Call("GET", "/models", _profiles)


def profile(name: str) -> Call[Profile]:
    return Call("GET", f"/models/{_name(name)}", Profile.model_validate)


def delete_profile(name: str) -> Call[None]:
    return Call("DELETE", f"/models/{_name(name)}", _nothing)


def load(name: str, wait: bool) -> Call[Profile]:
    return Call(
        "POST", f"/models/{_name(name)}/load", Profile.model_validate, params={"wait": wait}
    )


def unload(name: str, wait: bool) -> Call[Profile]:
    return Call(
        "POST", f"/models/{_name(name)}/unload", Profile.model_validate, params={"wait": wait}
    )


def upload(content: bytes) -> Call[FileObject]:
    files = {"file": ("batch.jsonl", content, "application/jsonl")}
    return Call(
        "POST", "/v1/files", FileObject.model_validate, files=files, data={"purpose": "batch"}
    )


def create_batch(file_id: str, endpoint: str, window: str) -> Call[Batch]:
    body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": window}
    return Call("POST", "/v1/batches", Batch.model_validate, json=body)


def batch(batch_id: str) -> Call[Batch]:
    return Call("GET", f"/v1/batches/{_id(batch_id)}", Batch.model_validate)


def batches(limit: int) -> Call[list[Batch]]:
    return Call("GET", "/v1/batches", _batches, params={"limit": limit})


def cancel_batch(batch_id: str) -> Call[Batch]:
    return Call("POST", f"/v1/batches/{_id(batch_id)}/cancel", Batch.model_validate)


def create_key(body: dict[str, Any]) -> Call[NewApiKey]:
    return Call("POST", "/keys", NewApiKey.model_validate, json=body)


def keys() -> Call[list[ApiKey]]:
    return Call("GET", "/keys", _keys)


def key(key_id: str) -> Call[ApiKey]:
    return Call("GET", f"/keys/{_id(key_id)}", ApiKey.model_validate)


def update_key(key_id: str, changes: dict[str, Any]) -> Call[ApiKey]:
    return Call("PATCH", f"/keys/{_id(key_id)}", ApiKey.model_validate, json=changes)


def delete_key(key_id: str) -> Call[None]:
    return Call("DELETE", f"/keys/{_id(key_id)}", _nothing)


def usage(params: dict[str, str]) -> Call[list[UsageRow]]:
    return Call("GET", "/usage", _usage_rows, params=params)


def my_usage(params: dict[str, str]) -> Call[list[UsageRow]]:
    return Call("GET", "/usage/me", _usage_rows, params=params)


def download(model: str, revision: str, weights: bool) -> Call[Download]:
    body = {"model": model, "revision": revision, "weights": weights}
    return Call("POST", "/downloads", Download.model_validate, json=body)


def downloads() -> Call[list[Download]]:
    return Call("GET", "/downloads", _downloads)


def get_download(download_id: str) -> Call[Download]:
    return Call("GET", f"/downloads/{_id(download_id)}", Download.model_validate)


def cancel_download(download_id: str) -> Call[Download]:
    return Call("DELETE", f"/downloads/{_id(download_id)}", Download.model_validate)


def cache() -> Call[Cache]:
    return Call("GET", "/cache", Cache.model_validate)


def remove_from_cache(model: str) -> Call[CacheRemoval]:
    return Call("DELETE", f"/cache/{_name(model)}", CacheRemoval.model_validate)
