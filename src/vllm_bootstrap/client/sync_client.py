"""The synchronous client (httpx.Client); requests are described in calls.py."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from vllm_bootstrap.client import calls, common
from vllm_bootstrap.client.common import ApiError
from vllm_bootstrap.client.models import Launch, LogChunk, Profile, Stats

T = TypeVar("T")
POLL_SECONDS = 0.5


class Client(common.ClientBase):
    def __init__(
        self, url: str | None = None, key: str | None = None, timeout: float = 60.0
    ) -> None:
        super().__init__(url, key, timeout)
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
        return self.logs(launch_id, common.tail_offset(self.logs(launch_id).size)).content

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
    ) -> dict[str, Any]:
        """Upload a JSONL file (a path) or request lines (dicts), then create the batch."""
        uploaded = self._send(calls.upload(common.jsonl_content(requests)))
        return self._send(calls.create_batch(uploaded["id"], endpoint, completion_window))

    def batch(self, batch_id: str) -> dict[str, Any]:
        return self._send(calls.batch(batch_id))

    def batches(self, limit: int = 20) -> list[dict[str, Any]]:
        return list(self._send(calls.batches(limit))["data"])

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self._send(calls.cancel_batch(batch_id))

    def wait_for_batch(
        self,
        batch_id: str,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll until the batch has ended; TimeoutError after `timeout` seconds if given."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = self.batch(batch_id)
            if on_update is not None:
                on_update(batch)
            if batch["status"] in common.BATCH_ENDED:
                return batch
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} is still {batch['status']}")
            time.sleep(POLL_SECONDS)

    def file_content(self, file_id: str) -> bytes:
        response = self._http.get(f"/v1/files/{quote(file_id, safe='')}/content")
        common.checked_bytes(response)
        return response.content

    def batch_results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """Every result line (output file, then error file), each with its custom_id."""
        for file_id in common.result_files(self.batch(batch_id)):
            yield from common.result_lines(self.file_content(file_id))

    # ----------------------------------------------------------------- sending

    def _send(self, call: calls.Call[T]) -> T:
        response = self._http.request(call.method, call.path, **call.request)
        return call.parse(common.checked(response))
