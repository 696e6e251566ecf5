"""The asynchronous client (httpx.AsyncClient): the same methods as `Client`, awaited;
requests are described once, in calls.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
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


class AsyncClient(common.ClientBase):
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
        self._http = httpx.AsyncClient(**self._http_options)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- launches

    async def launch(self, model: str, gpu_ids: list[int] | None = None, **options: Any) -> Launch:
        return await self._send(calls.launch(common.launch_body(model, gpu_ids, **options)))

    async def status(self, launch_id: str) -> Launch:
        return await self._send(calls.status(launch_id))

    async def launches(self, all: bool = False) -> list[Launch]:
        return await self._send(calls.launches(all))

    async def stop(self, launch_id: str, wait: bool = False) -> Launch:
        return await self._send(calls.stop(launch_id, wait))

    async def logs(self, launch_id: str, offset: int = 0) -> LogChunk:
        return await self._send(calls.logs(launch_id, offset))

    async def log_tail(self, launch_id: str) -> str:
        """The end of the launch's log, from the start of a line."""
        offset = common.tail_offset((await self.logs(launch_id)).size)
        return common.from_a_line_start((await self.logs(launch_id, offset)).content, offset)

    async def follow_logs(self, launch_id: str, offset: int = 0) -> AsyncIterator[str]:
        """Log text as it is written, until the launch has ended and all of it was read."""
        while True:
            chunk = await self.logs(launch_id, offset)
            if chunk.content:
                yield chunk.content
            offset = chunk.next_offset
            if offset >= chunk.size and (await self.status(launch_id)).is_ended:
                if (await self.logs(launch_id, offset)).size <= offset:
                    return
            elif not chunk.content:
                await asyncio.sleep(POLL_SECONDS)

    async def wait_until_ready(
        self,
        launch_id: str,
        timeout: float | None = None,
        on_update: Callable[[Launch], None] | None = None,
    ) -> Launch:
        """Poll until ready; LaunchFailed (with the log's tail) if it ends instead."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            launch = await self.status(launch_id)
            if on_update is not None:
                on_update(launch)
            verdict = common.start_up_verdict(launch)
            if verdict == "ready":
                return launch
            if verdict == "ended":
                raise common.LaunchFailed(launch, await self.log_tail(launch_id))
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"launch {launch_id} is still {launch.state}")
            await asyncio.sleep(POLL_SECONDS)

    @contextlib.asynccontextmanager
    async def run(
        self,
        model: str,
        gpu_ids: list[int] | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> AsyncIterator[Launch]:
        """Launch, wait until ready, yield it; stop it on the way out, whatever happened."""
        launch = await self.launch(model, gpu_ids, **options)
        try:
            yield await self.wait_until_ready(launch.launch_id, timeout)
        except BaseException:
            with contextlib.suppress(ApiError, httpx.HTTPError):
                await self.stop(launch.launch_id, wait=True)
            raise
        await self.stop(launch.launch_id, wait=True)

    async def gpus(self) -> list[Gpu]:
        """The GPUs this server may use ([] on a CPU box), with the launch holding each."""
        return await self._send(calls.gpus())

    async def nodes(self) -> list[Node]:
        """The boxes of this endpoint: on a cluster's head every node, else this box."""
        return await self._send(calls.nodes())

    async def stats(self) -> Stats:
        return await self._send(calls.stats())

    # ----------------------------------------------------------------- model profiles

    async def put_profile(self, name: str, model: str, **fields: Any) -> Profile:
        return await self._send(calls.put_profile(name, {"model": model, **fields}))

    async def profiles(self) -> list[Profile]:
        return await self._send(calls.profiles())

    async def profile(self, name: str) -> Profile:
        return await self._send(calls.profile(name))

    async def delete_profile(self, name: str) -> None:
        await self._send(calls.delete_profile(name))

    async def load(self, name: str, wait: bool = False) -> Profile:
        return await self._send(calls.load(name, wait))

    async def unload(self, name: str, wait: bool = False) -> Profile:
        return await self._send(calls.unload(name, wait))

    # ----------------------------------------------------------------- batches

    async def submit_batch(
        self,
        requests: Path | str | Iterable[dict[str, Any]],
        endpoint: str = "/v1/chat/completions",
        completion_window: str = "24h",
    ) -> Batch:
        uploaded = await self._send(calls.upload(common.jsonl_content(requests)))
        return await self._send(calls.create_batch(uploaded.id, endpoint, completion_window))

    async def batch(self, batch_id: str) -> Batch:
        return await self._send(calls.batch(batch_id))

    async def batches(self, limit: int = 20) -> list[Batch]:
        return await self._send(calls.batches(limit))

    async def cancel_batch(self, batch_id: str) -> Batch:
        return await self._send(calls.cancel_batch(batch_id))

    async def wait_for_batch(
        self,
        batch_id: str,
        on_update: Callable[[Batch], None] | None = None,
        timeout: float | None = None,
    ) -> Batch:
        """Poll until the batch has ended; TimeoutError after `timeout` seconds if given."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = await self.batch(batch_id)
            if on_update is not None:
                on_update(batch)
            if batch.is_ended:
                return batch
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} is still {batch.status}")
            await asyncio.sleep(POLL_SECONDS)

    async def file_content(self, file_id: str) -> bytes:
        response = await self._http.get(f"/v1/files/{quote(file_id, safe='')}/content")
        common.checked_bytes(response)
        return response.content

    async def batch_results(self, batch_id: str) -> AsyncIterator[dict[str, Any]]:
        for file_id in common.result_files(await self.batch(batch_id)):
            for line in common.result_lines(await self.file_content(file_id)):
                yield line

    # ----------------------------------------------------------------- scoped keys

    async def create_key(
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
        fields = {
            "scopes": scopes,
            "models": models,
            "max_concurrency": max_concurrency,
            "requests_per_minute": requests_per_minute,
            "tokens_per_minute": tokens_per_minute,
            "priority": priority,
            "expires_at": expires_at,
        }
        return await self._send(calls.create_key(common.new_key_body(name, fields)))

    async def keys(self) -> list[ApiKey]:
        return await self._send(calls.keys())

    async def key(self, key_id: str) -> ApiKey:
        return await self._send(calls.key(key_id))

    async def update_key(self, key_id: str, **changes: Any) -> ApiKey:
        return await self._send(calls.update_key(key_id, common.key_fields(changes)))

    async def delete_key(self, key_id: str) -> None:
        await self._send(calls.delete_key(key_id))

    async def usage(
        self,
        key: str | None = None,
        model: str | None = None,
        since: date | str | None = None,
        until: date | str | None = None,
        group_by: str | Iterable[str] | None = None,
    ) -> list[UsageRow]:
        params = common.usage_params(key, model, since, until, group_by)
        return await self._send(calls.usage(params))

    async def my_usage(
        self,
        model: str | None = None,
        since: date | str | None = None,
        until: date | str | None = None,
        group_by: str | Iterable[str] | None = None,
    ) -> list[UsageRow]:
        params = common.usage_params(None, model, since, until, group_by)
        return await self._send(calls.my_usage(params))

    # ----------------------------------------------------------------- downloads and the cache

    async def download(self, model: str, revision: str = "main", weights: bool = True) -> Download:
        return await self._send(calls.download(model, revision, weights))

    async def downloads(self) -> list[Download]:
        return await self._send(calls.downloads())

    async def get_download(self, download_id: str) -> Download:
        return await self._send(calls.get_download(download_id))

    async def cancel_download(self, download_id: str) -> Download:
        return await self._send(calls.cancel_download(download_id))

    async def wait_for_download(
        self,
        download_id: str,
        timeout: float | None = None,
        on_update: Callable[[Download], None] | None = None,
    ) -> Download:
        """Poll until it has ended and return it, whatever the end; TimeoutError after
        `timeout` seconds if given."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            download = await self.get_download(download_id)
            if on_update is not None:
                on_update(download)
            if download.is_ended:
                return download
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"download {download_id} is still {download.state}")
            await asyncio.sleep(POLL_SECONDS)

    async def cache(self) -> Cache:
        return await self._send(calls.cache())

    async def remove_from_cache(self, model: str) -> CacheRemoval:
        return await self._send(calls.remove_from_cache(model))

    # ----------------------------------------------------------------- sending

    async def _send(self, call: calls.Call[T]) -> T:
        response = await self._http.request(call.method, call.path, **call.request)
        return call.parse(common.checked(response))
