"""The synchronous client (httpx.Client)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from vllm_bootstrap.client import common
from vllm_bootstrap.client.common import ApiError
from vllm_bootstrap.client.models import Launch, LogChunk, Profile, Stats

POLL_SECONDS = 0.5


class Client:
    def __init__(
        self, url: str | None = None, key: str | None = None, timeout: float = 60.0
    ) -> None:
        """`url` and `key` default to VLLM_BOOTSTRAP_URL and VLLM_ACCESS_KEY."""
        self.url = common.base_url(url)
        self._key = key
        self._http = httpx.Client(base_url=self.url, headers=common.headers(key), timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ----------------------------------------------------------------- launches

    def launch(self, model: str, gpu_ids: list[int] | None = None, **options: Any) -> Launch:
        """Start vLLM (options as POST /launch: extra_args, env, port, restart, ...)."""
        body = common.launch_body(model, gpu_ids, **options)
        return Launch.model_validate(self._call("POST", "/launch", json=body))

    def status(self, launch_id: str) -> Launch:
        return Launch.model_validate(self._call("GET", f"/status/{launch_id}"))

    def launches(self, all: bool = False) -> list[Launch]:
        answer = self._call("GET", "/launch", params={"all": all})
        return [Launch.model_validate(launch) for launch in answer]

    def stop(self, launch_id: str, wait: bool = False) -> Launch:
        answer = self._call("POST", f"/stop/{launch_id}", params={"wait": wait})
        return Launch.model_validate(answer)

    def logs(self, launch_id: str, offset: int = 0) -> LogChunk:
        answer = self._call("GET", f"/logs/{launch_id}", params={"offset": offset})
        return LogChunk.model_validate(answer)

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

    def log_tail(self, launch_id: str) -> str:
        size = self.logs(launch_id).size
        return self.logs(launch_id, max(0, size - common.LOG_TAIL_BYTES)).content

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
            if launch.state == "ready":
                return launch
            if launch.is_ended or launch.state == "stopping":
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
        return Stats.model_validate(self._call("GET", "/stats"))

    def openai(self, launch_id: str | None = None) -> Any:
        """An openai.OpenAI client for /v1 (by model) or for one launch (/proxy/{id}/v1)."""
        return common.openai_client(self.url, self._key, launch_id)

    # ----------------------------------------------------------------- model profiles

    def put_profile(self, name: str, model: str, **fields: Any) -> Profile:
        answer = self._call("PUT", f"/models/{name}", json={"model": model, **fields})
        return Profile.model_validate(answer)

    def profiles(self) -> list[Profile]:
        return [Profile.model_validate(profile) for profile in self._call("GET", "/models")]

    def profile(self, name: str) -> Profile:
        return Profile.model_validate(self._call("GET", f"/models/{name}"))

    def delete_profile(self, name: str) -> None:
        self._call("DELETE", f"/models/{name}")

    def load(self, name: str, wait: bool = False) -> Profile:
        answer = self._call("POST", f"/models/{name}/load", params={"wait": wait})
        return Profile.model_validate(answer)

    def unload(self, name: str, wait: bool = False) -> Profile:
        answer = self._call("POST", f"/models/{name}/unload", params={"wait": wait})
        return Profile.model_validate(answer)

    # ----------------------------------------------------------------- batches

    def submit_batch(
        self,
        requests: Path | str | Iterable[dict[str, Any]],
        endpoint: str = "/v1/chat/completions",
        completion_window: str = "24h",
    ) -> dict[str, Any]:
        """Upload a JSONL file (a path) or request lines (dicts), then create the batch."""
        content = common.jsonl_content(requests)
        files = {"file": ("batch.jsonl", content, "application/jsonl")}
        uploaded = self._call("POST", "/v1/files", files=files, data={"purpose": "batch"})
        body = {
            "input_file_id": uploaded["id"],
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        return dict(self._call("POST", "/v1/batches", json=body))

    def batch(self, batch_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/batches/{batch_id}"))

    def wait_for_batch(
        self, batch_id: str, on_update: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        while True:
            batch = self.batch(batch_id)
            if on_update is not None:
                on_update(batch)
            if batch["status"] in common.BATCH_ENDED:
                return batch
            time.sleep(POLL_SECONDS)

    def batch_results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """Every result line (output file, then error file), each with its custom_id."""
        batch = self.batch(batch_id)
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if file_id:
                response = self._http.get(f"/v1/files/{file_id}/content")
                common.checked_bytes(response)
                for line in response.text.splitlines():
                    if line.strip():
                        yield json.loads(line)

    # ----------------------------------------------------------------- sending

    def _call(self, method: str, path: str, **request: Any) -> Any:
        return common.checked(self._http.request(method, path, **request))
