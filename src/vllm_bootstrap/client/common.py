"""What the sync and async clients share: where the server is, the key, errors, and the
decisions that do not depend on how a request is sent."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx

from vllm_bootstrap.client.models import Batch, Launch

DEFAULT_URL = "http://127.0.0.1:8000"
# Log lines shown with a launch that failed to start.
LOG_TAIL_BYTES = 4096


class ApiError(RuntimeError):
    """The server refused a request; `status` and `detail` say how and why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


class LaunchFailed(RuntimeError):
    """A launch ended instead of becoming ready; `log_tail` is the end of its log."""

    def __init__(self, launch: Launch, log_tail: str) -> None:
        reason = launch.error or f"it is {launch.state}"
        super().__init__(f"launch {launch.launch_id} did not become ready: {reason}\n{log_tail}")
        self.launch, self.log_tail = launch, log_tail


class ClientBase:
    """Where the server is and the key: what both clients are made with."""

    def __init__(self, url: str | None, key: str | None, timeout: float) -> None:
        """`url` and `key` default to VLLM_BOOTSTRAP_URL and VLLM_ACCESS_KEY."""
        self.url = base_url(url)
        self._key = key
        self._http_options: dict[str, Any] = {
            "base_url": self.url,
            "headers": headers(key),
            "timeout": timeout,
        }

    def openai(self, launch_id: str | None = None) -> Any:
        """An openai.OpenAI client for /v1 (by model) or for one launch (/proxy/{id}/v1)."""
        return openai_client(self.url, self._key, launch_id)


def one_of(
    url: str | None, base_url: str | None, key: str | None, api_key: str | None
) -> tuple[str | None, str | None]:
    """The server and key, given by our names or the openai client's (not both)."""
    if url is not None and base_url is not None:
        raise TypeError("give url or base_url, not both")
    if key is not None and api_key is not None:
        raise TypeError("give key or api_key, not both")
    if base_url is not None:  # the openai client's points at /v1: ours at the server
        base_url = base_url.rstrip("/").removesuffix("/v1")
    return url if url is not None else base_url, key if key is not None else api_key


def base_url(url: str | None) -> str:
    return (url or os.environ.get("VLLM_BOOTSTRAP_URL") or DEFAULT_URL).rstrip("/")


def headers(key: str | None) -> dict[str, str]:
    key = key if key is not None else os.environ.get("VLLM_ACCESS_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def checked(response: httpx.Response) -> Any:
    """The JSON of a successful answer; ApiError with the server's own words otherwise."""
    if response.is_success:
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                response.status_code, f"the answer is not JSON: {response.text[:200]!r}"
            ) from None
    try:
        payload = response.json()
    except ValueError:
        detail = response.text[:500] or response.reason_phrase
        raise ApiError(response.status_code, detail) from None
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if detail is None and isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        detail = payload["error"].get("message")
    raise ApiError(response.status_code, str(detail if detail is not None else payload))


def start_up_verdict(launch: Launch) -> str:
    """ "ready", "ended" (it will not become ready: failed, stopped, being stopped, asleep)
    or "waiting"."""
    if launch.state == "ready":
        return "ready"
    if launch.is_ended or launch.state in ("stopping", "sleeping"):
        return "ended"
    return "waiting"


def tail_offset(size: int) -> int:
    """Where to read a log's tail: one byte before it, which tells whether it starts a line."""
    return max(0, size - LOG_TAIL_BYTES - 1)


def from_a_line_start(text: str, offset: int) -> str:
    """A tail read from `offset` (tail_offset's) without the piece of a line it began in
    (none at 0). A last line longer than the whole tail is kept, marked as cut."""
    if offset == 0:
        return text
    _, newline, rest = text.partition("\n")
    if newline and rest:
        return rest
    return "…" + text[1:]


def checked_bytes(response: httpx.Response) -> None:
    """Raise ApiError unless the answer succeeded (for answers that are not JSON)."""
    if not response.is_success:
        checked(response)


def jsonl_content(requests: Path | str | Iterable[dict[str, Any]]) -> bytes:
    """A batch input file: read from a path, or written from request lines."""
    if isinstance(requests, str | Path):
        return Path(requests).read_bytes()
    return b"".join(json.dumps(line).encode() + b"\n" for line in requests)


def result_files(batch: Batch) -> list[str]:
    return [file_id for file_id in (batch.output_file_id, batch.error_file_id) if file_id]


def result_lines(content: bytes) -> Iterator[dict[str, Any]]:
    for line in content.splitlines():
        if line.strip():
            yield json.loads(line)


def launch_body(model: str, gpu_ids: list[int] | None, **options: Any) -> dict[str, Any]:
    body = {"model": model, **{name: value for name, value in options.items() if value is not None}}
    if gpu_ids is not None:
        body["gpu_ids"] = gpu_ids
    return body


# When a key stops working: Unix seconds, ISO 8601 text, or a datetime.
Moment = int | float | str | datetime


def new_key_body(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """POST /keys's body: what was not given is left to the server's defaults."""
    given = {field: value for field, value in fields.items() if value is not None}
    return key_fields({"name": name, **given})


def key_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields of POST or PATCH /keys as JSON: lists for `scopes` and `models` (one name is a
    list of one), a datetime `expires_at` as Unix seconds (a naive one in this machine's time
    zone). None stays: PATCH takes it as "no limit" ("every model", "never")."""
    body = dict(fields)
    for name in ("scopes", "models"):
        value = body.get(name)
        if value is not None:
            body[name] = [value] if isinstance(value, str) else list(value)
    if isinstance(body.get("expires_at"), datetime):
        body["expires_at"] = int(body["expires_at"].timestamp())
    return body


def usage_params(
    key: str | None,
    model: str | None,
    since: date | str | None,
    until: date | str | None,
    group_by: str | Iterable[str] | None,
) -> dict[str, str]:
    """GET /usage's query: days as YYYY-MM-DD, `group_by` as "key,model" (empty: one row of
    totals; None: the server's default)."""
    days = {"since": since, "until": until}
    params = {"key": key, "model": model, **{name: _day(day) for name, day in days.items()}}
    if group_by is not None:
        params["group_by"] = group_by if isinstance(group_by, str) else ",".join(group_by)
    return {name: value for name, value in params.items() if value is not None}


def _day(value: date | str | None) -> str | None:
    if isinstance(value, datetime):
        value = value.date()
    return value.isoformat() if isinstance(value, date) else value


def openai_client(url: str, key: str | None, launch_id: str | None) -> Any:
    """An `openai.OpenAI` pointed at /v1 (routed by model) or at one launch's /proxy."""
    try:
        import openai
    except ImportError:
        raise ImportError("client.openai() needs the openai package: pip install openai") from None
    path = f"/proxy/{launch_id}/v1" if launch_id else "/v1"
    api_key = key if key is not None else os.environ.get("VLLM_ACCESS_KEY")
    return openai.OpenAI(base_url=f"{url}{path}", api_key=api_key or "unused")
