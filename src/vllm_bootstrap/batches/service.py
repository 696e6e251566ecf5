"""The batch service: create, look up, list and cancel batches; resume them at start-up.

It owns one BatchRun task per unfinished batch. At shutdown the tasks are stopped without
changing any status, and `resume()` at the next start picks every unfinished batch up
where its recorded progress ends.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from vllm_bootstrap.batches.files import check_not_expired
from vllm_bootstrap.batches.record import (
    COMPLETION_WINDOWS,
    MAX_REQUEST_TIMEOUT_SECONDS,
    MIN_REQUEST_TIMEOUT_SECONDS,
    PRIORITIES,
    PRIORITY_KEY,
    REQUEST_TIMEOUT_KEY,
    Batch,
    BatchStatus,
    parse_request_timeout,
)
from vllm_bootstrap.batches.runner import BatchRun, RunContext
from vllm_bootstrap.batches.store import BatchWriteFailed, Page

# The endpoints a batch may target: OpenAI's three, and what else vLLM serves that makes
# sense in a batch, passed through as they are.
ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/score",
    "/v1/rerank",
)
MAX_METADATA_PAIRS = 16
logger = logging.getLogger("vllm_bootstrap.batches")


class BatchRefused(ValueError):
    """A batch request that cannot be taken: `param` names the field to fix."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


class InputFileNotFound(BatchRefused):
    pass


class NotCancellable(BatchRefused):
    """The batch has already ended (or is finishing) on its own."""


class BatchNotFound(LookupError):
    def __init__(self, batch_id: str) -> None:
        super().__init__(f"no batch with id {batch_id!r}")


class Batches:
    def __init__(self, context: RunContext) -> None:
        self._context = context
        self._store = context.store
        self.files = context.files
        self._runs: dict[str, BatchRun] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def create(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, Any] | None,
        output_expires_after: int | None = None,
        owner: str | None = None,
        viewer: str | None = None,
    ) -> Batch:
        """A new batch (`owner`'s: a scoped key's), of an input file `viewer` may see."""
        _check(endpoint, completion_window, metadata)
        input_file = self.files.get(input_file_id, viewer)
        if input_file is None:
            raise InputFileNotFound(f"no file {input_file_id!r}", "input_file_id")
        check_not_expired(input_file)
        if input_file.purpose != "batch":
            raise BatchRefused(
                f"file {input_file_id} has purpose {input_file.purpose!r}; upload the input "
                "with purpose=batch",
                "input_file_id",
            )
        now = int(time.time())
        batch = Batch(
            id=f"batch_{secrets.token_hex(12)}",
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=completion_window,
            metadata=metadata,
            created_at=now,
            expires_at=now + int(COMPLETION_WINDOWS[completion_window]),
            output_expires_after=output_expires_after,
            owner=owner,
        )
        self._store.add_batch(batch)
        self._start(batch)
        return batch

    def get(self, batch_id: str, viewer: str | None = None) -> Batch:
        """The batch; BatchNotFound also when it is not `viewer`'s (None: anyone's)."""
        run = self._runs.get(batch_id)
        batch = run.batch if run is not None else self._store.batch(batch_id)
        if batch is None or (viewer is not None and batch.owner != viewer):
            raise BatchNotFound(batch_id)
        return batch

    def list(self, limit: int, after: str | None, viewer: str | None = None) -> Page:
        page = self._store.batches(limit, after, viewer)
        live = [self._runs[b.id].batch if b.id in self._runs else b for b in page.items]
        return Page(live, page.has_more)

    def cancel(self, batch_id: str, viewer: str | None = None) -> Batch:
        batch = self.get(batch_id, viewer)
        run = self._runs.get(batch_id)
        if batch.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED) or (
            run is not None and run.stopping_as is BatchStatus.CANCELLED
        ):
            return batch  # already on its way, or done: a retried cancel is not an error
        if (
            run is None
            or run.stopping_as is not None
            or batch.status not in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)
        ):
            state = "expiring" if run is not None and run.stopping_as else batch.status.value
            raise NotCancellable(
                f"batch {batch_id} is {state}: only a validating or in-progress batch can be "
                "cancelled"
            )
        previous, stamps = batch.status, dict(batch.stamps)
        batch.move_to(BatchStatus.CANCELLING)
        try:
            self._store.save_batch(batch)
        except BatchWriteFailed:
            batch.status, batch.stamps = previous, stamps  # as it was: the run goes on
            raise
        run.stop(BatchStatus.CANCELLED)
        return batch

    def resume(self) -> None:
        """Start every batch the last run left unfinished."""
        for batch in self._store.unfinished_batches():
            logger.info("batch %s: resuming (%s)", batch.id, batch.status.value)
            self._start(batch)

    async def shutdown(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _start(self, batch: Batch) -> None:
        run = BatchRun(batch, self._context)
        self._runs[batch.id] = run
        task = asyncio.create_task(run.run(), name=f"batch {batch.id}")
        self._tasks[batch.id] = task
        task.add_done_callback(lambda _: self._ended(batch.id))

    def _ended(self, batch_id: str) -> None:
        self._runs.pop(batch_id, None)
        self._tasks.pop(batch_id, None)


def _check(endpoint: str, completion_window: str, metadata: dict[str, Any] | None) -> None:
    if endpoint not in ENDPOINTS:
        raise BatchRefused(
            f"endpoint {endpoint!r} is not supported; use one of {', '.join(ENDPOINTS)}",
            "endpoint",
        )
    if completion_window not in COMPLETION_WINDOWS:
        raise BatchRefused(
            f"completion_window must be one of {', '.join(COMPLETION_WINDOWS)}",
            "completion_window",
        )
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA_PAIRS or not all(
        isinstance(key, str) and isinstance(value, str) and len(key) <= 64 and len(value) <= 512
        for key, value in metadata.items()
    ):
        raise BatchRefused(
            f"metadata: at most {MAX_METADATA_PAIRS} string pairs, keys up to 64 characters, "
            "values up to 512",
            "metadata",
        )
    priority = metadata.get(PRIORITY_KEY)
    if priority is not None and priority not in PRIORITIES:
        raise BatchRefused(
            f"metadata.{PRIORITY_KEY} must be one of {', '.join(PRIORITIES)} "
            f"(live: the batch's lines do not yield to live requests), got {priority[:40]!r}",
            "metadata",
        )
    timeout = metadata.get(REQUEST_TIMEOUT_KEY)
    if timeout is not None and parse_request_timeout(timeout) is None:
        raise BatchRefused(
            f"metadata.{REQUEST_TIMEOUT_KEY} must be a number of seconds from "
            f"{MIN_REQUEST_TIMEOUT_SECONDS:g} to {MAX_REQUEST_TIMEOUT_SECONDS:g}, written "
            f'as a string of digits ("120" or "2.5"), got {timeout[:40]!r}',
            "metadata",
        )
