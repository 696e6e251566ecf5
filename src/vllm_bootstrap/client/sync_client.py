"""The synchronous client (httpx.Client); requests are described in calls.py."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from vllm_bootstrap.client import calls, common
from vllm_bootstrap.client.common import ApiError
from vllm_bootstrap.client.models import (
    ApiKey,
    Batch,
    Cache,
    CacheRemoval,
    Download,
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
POLL_SECONDS = 0.5


class Client(common.ClientBase):
    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        timeout: float = 60.0,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        """`url` and `key`, or the names the openai client uses (`base_url`, `api_key`);
        by default VLLM_BOOTSTRAP_URL and VLLM_ACCESS_KEY."""
        super().__init__(*common.one_of(url, base_url, key, api_key), timeout)
        self._http = httpx.Client(**self._http_options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ----------------------------------------------------------------- launches

    def launch(self, model: str, gpu_ids: list[int] | None = None, **options: Any) -> Launch:
        """Start vLLM (options as POST /launch: extra_args, env, port, restart, ...)."""
        return self._send(calls.launch(common.launch_body(model, gpu_ids, **options)))

    def status(self, launch_id: str) -> Launch:
        return self._send(calls.status(launch_id))

    def launches(self, all: bool = False) -> list[Launch]:
        return self._send(calls.launches(all))

    def stop(self, launch_id: str, wait: bool = False) -> Launch:
        return self._send(calls.stop(launch_id, wait))

    def logs(self, launch_id: str, offset: int = 0) -> LogChunk:
        return self._send(calls.logs(launch_id, offset))

    def log_tail(self, launch_id: str) -> str:
        """The end of the launch's log, from the start of a line."""
        offset = common.tail_offset(self.logs(launch_id).size)
        return common.from_a_line_start(self.logs(launch_id, offset).content, offset)

    def follow_logs(self, launch_id: str, offset: int = 0) -> Iterator[str]:
        """Log text as it is written, until the launch has ended and all of it was read."""
        while True:
            chunk = self.logs(launch_id, offset)
            if chunk.content:
                yield chunk.content
            offset = chunk.next_offset
            if offset >= chunk.size and self.status(launch_id).is_ended:
                if self.logs(launch_id, offset).size <= offset:
                    return
            elif not chunk.content:
                time.sleep(POLL_SECONDS)

    def wait_until_ready(
        self,
        launch_id: str,
        timeout: float | None = None,
        on_update: Callable[[Launch], None] | None = None,
    ) -> Launch:
        """Poll until ready; LaunchFailed (with the log's tail) if it ends instead."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            launch = self.status(launch_id)
            if on_update is not None:
                on_update(launch)
            verdict = common.start_up_verdict(launch)
            if verdict == "ready":
                return launch
            if verdict == "ended":
                raise common.LaunchFailed(launch, self.log_tail(launch_id))
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"launch {launch_id} is still {launch.state}")
            time.sleep(POLL_SECONDS)

    @contextlib.contextmanager
    def run(
        self,
        model: str,
        gpu_ids: list[int] | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Iterator[Launch]:
        """Launch, wait until ready, yield it; stop it on the way out, whatever happened."""
        launch = self.launch(model, gpu_ids, **options)
        try:
            yield self.wait_until_ready(launch.launch_id, timeout)
        except BaseException:
            # The stop must not hide what went wrong in the block (or the LaunchFailed).
            with contextlib.suppress(ApiError, httpx.HTTPError):
                self.stop(launch.launch_id, wait=True)
            raise
        self.stop(launch.launch_id, wait=True)

    def gpus(self) -> list[Gpu]:
        """The GPUs this server may use ([] on a CPU box), with the launch holding each."""
        return self._send(calls.gpus())

    def nodes(self) -> list[Node]:
        """The boxes of this endpoint: on a cluster's head every node, else this box."""
        return self._send(calls.nodes())

    def stats(self) -> Stats:
        return self._send(calls.stats())

    # ----------------------------------------------------------------- model profiles

    def put_profile(self, name: str, model: str, **fields: Any) -> Profile:
        return self._send(calls.put_profile(name, {"model": model, **fields}))

    def profiles(self) -> list[Profile]:
        return self._send(calls.profiles())

    def profile(self, name: str) -> Profile:
        return self._send(calls.profile(name))

    def delete_profile(self, name: str) -> None:
        self._send(calls.delete_profile(name))

    def load(self, name: str, wait: bool = False) -> Profile:
        return self._send(calls.load(name, wait))

    def unload(self, name: str, wait: bool = False) -> Profile:
        return self._send(calls.unload(name, wait))

    # ----------------------------------------------------------------- batches

    def submit_batch(
        self,
        requests: Path | str | Iterable[dict[str, Any]],
        endpoint: str = "/v1/chat/completions",
        completion_window: str = "24h",
    ) -> Batch:
        """Upload a JSONL file (a path) or request lines (dicts), then create the batch."""
        uploaded = self._send(calls.upload(common.jsonl_content(requests)))
        return self._send(calls.create_batch(uploaded.id, endpoint, completion_window))

    def batch(self, batch_id: str) -> Batch:
        return self._send(calls.batch(batch_id))

    def batches(self, limit: int = 20) -> list[Batch]:
        return self._send(calls.batches(limit))

    def cancel_batch(self, batch_id: str) -> Batch:
        return self._send(calls.cancel_batch(batch_id))

    def wait_for_batch(
        self,
        batch_id: str,
        on_update: Callable[[Batch], None] | None = None,
        timeout: float | None = None,
    ) -> Batch:
        """Poll until the batch has ended; TimeoutError after `timeout` seconds if given."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = self.batch(batch_id)
            if on_update is not None:
                on_update(batch)
            if batch.is_ended:
                return batch
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} is still {batch.status}")
            time.sleep(POLL_SECONDS)

    def file_content(self, file_id: str) -> bytes:
        response = self._http.get(f"/v1/files/{quote(file_id, safe='')}/content")
        common.checked_bytes(response)
        return response.content

    def batch_results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """Every result line (output file, then error file), each with its custom_id."""
        for file_id in common.result_files(self.batch(batch_id)):
            yield from common.result_lines(self.file_content(file_id))

    # ----------------------------------------------------------------- scoped keys

    def create_key(
        self,
        name: str,
        scopes: Iterable[str] | None = None,
        *,
        models: Iterable[str] | None = None,
        max_concurrency: int | None = None,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        priority: int | None = None,
        expires_at: common.Moment | None = None,
    ) -> NewApiKey:
        """A new key: `scopes` default to inference, `models` to all of them, limits to none.
        Its secret, `.key`, is in this answer only (the server keeps its hash)."""
        fields = {
            "scopes": scopes,
            "models": models,
            "max_concurrency": max_concurrency,
            "requests_per_minute": requests_per_minute,
            "tokens_per_minute": tokens_per_minute,
            "priority": priority,
            "expires_at": expires_at,
        }
        return self._send(calls.create_key(common.new_key_body(name, fields)))

    def keys(self) -> list[ApiKey]:
        return self._send(calls.keys())

    def key(self, key_id: str) -> ApiKey:
        return self._send(calls.key(key_id))

    def update_key(self, key_id: str, **changes: Any) -> ApiKey:
        """Change some fields (as POST /keys names them); None clears a limit, `models=None`
        allows every model, `expires_at=None` never expires."""
        return self._send(calls.update_key(key_id, common.key_fields(changes)))

    def delete_key(self, key_id: str) -> None:
        self._send(calls.delete_key(key_id))

    def usage(
        self,
        key: str | None = None,
        model: str | None = None,
        since: date | str | None = None,
        until: date | str | None = None,
        group_by: str | Iterable[str] | None = None,
    ) -> list[UsageRow]:
        """Usage of every scoped key (`key`: one key's, by id or name), summed per
        `group_by` ("key,model,day" by default; "" or []: one row of totals); days are
        YYYY-MM-DD (UTC) or dates, both ends included."""
        params = common.usage_params(key, model, since, until, group_by)
        return self._send(calls.usage(params))

    def my_usage(
        self,
        model: str | None = None,
        since: date | str | None = None,
        until: date | str | None = None,
        group_by: str | Iterable[str] | None = None,
    ) -> list[UsageRow]:
        """The usage of the key this client sends (a scoped key's; the access key has
        none): per model and day unless `group_by` says otherwise."""
        params = common.usage_params(None, model, since, until, group_by)
        return self._send(calls.my_usage(params))

    # ----------------------------------------------------------------- downloads and the cache

    def download(self, model: str, revision: str = "main", weights: bool = True) -> Download:
        """Fetch the files vLLM loads from a Hub repository into the server's cache
        (`weights=False`: its config and tokenizer only); completed at once when cached."""
        return self._send(calls.download(model, revision, weights))

    def downloads(self) -> list[Download]:
        return self._send(calls.downloads())

    def get_download(self, download_id: str) -> Download:
        return self._send(calls.get_download(download_id))

    def cancel_download(self, download_id: str) -> Download:
        """Stop it (the files it finished stay cached); harmless once it has ended."""
        return self._send(calls.cancel_download(download_id))

    def wait_for_download(
        self,
        download_id: str,
        timeout: float | None = None,
        on_update: Callable[[Download], None] | None = None,
    ) -> Download:
        """Poll until it has ended and return it, whatever the end: completed, failed (its
        `error` says why) or cancelled; TimeoutError after `timeout` seconds if given."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            download = self.get_download(download_id)
            if on_update is not None:
                on_update(download)
            if download.is_ended:
                return download
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"download {download_id} is still {download.state}")
            time.sleep(POLL_SECONDS)

    def cache(self) -> Cache:
        """The models in the server's Hugging Face cache, their sizes and who uses them."""
        return self._send(calls.cache())

    def remove_from_cache(self, model: str) -> CacheRemoval:
        """Delete a model's files; ApiError 409 while a live launch or a download uses it."""
        return self._send(calls.remove_from_cache(model))

    # ----------------------------------------------------------------- sending

    def _send(self, call: calls.Call[T]) -> T:
        response = self._http.request(call.method, call.path, **call.request)
        return call.parse(common.checked(response))
