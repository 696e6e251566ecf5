"""One batch's lifetime: validate, send every request, finalize; or stop early.

A run is a task. Each model named in the batch gets a lane that reads the pending request
rows of that model in file order, a page at a time, and starts a request as soon as the
model's gate gives it a slot: the in-flight count per launch stays at its limit while
results stream back. Cancelling or expiring stops the lanes (in-flight requests are
aborted: closing their connections makes vLLM drop them) and keeps what finished. A server
shutdown stops the task without changing the batch's status, so the next start resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from vllm_bootstrap.batches.files import FileDirectory
from vllm_bootstrap.batches.gates import ModelGates, ModelMissing
from vllm_bootstrap.batches.record import Batch, BatchStatus, InvalidTransition
from vllm_bootstrap.batches.requests import (
    ATTEMPTS,
    Outcome,
    RequestSender,
    backoff,
    error_outcome,
    request_id,
)
from vllm_bootstrap.batches.results import ResultsUnwritable, ResultWriter
from vllm_bootstrap.batches.store import BatchStore, BatchWriteFailed, RequestRow
from vllm_bootstrap.batches.validation import validate

PAGE_ROWS = 256
logger = logging.getLogger("vllm_bootstrap.batches")


@dataclass(frozen=True)
class RunSettings:
    folder: Path  # where batches write their output and error files
    model_wait_seconds: float
    max_line_bytes: int


@dataclass(frozen=True)
class RunContext:
    """What every batch's run shares."""

    store: BatchStore
    files: FileDirectory
    gates: ModelGates
    sender: RequestSender
    settings: RunSettings


class BatchRun:
    def __init__(self, batch: Batch, context: RunContext) -> None:
        self.batch = batch
        self._store = context.store
        self._files = context.files
        self._gates = context.gates
        self._sender = context.sender
        self._settings = context.settings
        self._stop_as: BatchStatus | None = None
        self._work: asyncio.Task[None] | None = None
        self._writer: ResultWriter | None = None
        self._input_fd: int | None = None

    async def run(self) -> None:
        try:
            await self._run()
        except (BatchWriteFailed, ResultsUnwritable, OSError) as exc:
            logger.error("batch %s failed: %s", self.batch.id, exc)
            self._fail("write_failed", str(exc))
        except Exception as exc:  # a bug must end the batch visibly, not leave it running
            logger.exception("batch %s failed", self.batch.id)
            self._fail("internal_error", f"{type(exc).__name__}: {exc}")

    def stop(self, status: BatchStatus) -> None:
        """Stop early, ending as `status` (cancelled or expired) with what finished."""
        if self._stop_as is None:
            self._stop_as = status
            if self._work is not None:
                self._work.cancel()

    async def _run(self) -> None:
        if self.batch.status is BatchStatus.VALIDATING and not await self._validate():
            return
        if self.batch.status is BatchStatus.IN_PROGRESS and self._stop_as is None:
            await self._execute()
        if self.batch.status is BatchStatus.CANCELLING:
            self._stop_as = BatchStatus.CANCELLED
        if self._stop_as is not None:
            await self._wrap_up_early(self._stop_as)
        elif self.batch.status in (BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING):
            self._finalize()

    async def _validate(self) -> bool:
        input_file = self._files.get(self.batch.input_file_id)
        if input_file is None:
            self._fail("file_not_found", f"input file {self.batch.input_file_id} is gone")
            return False
        self._store.clear_requests(self.batch.id)  # a validation cut off by a restart
        result = await validate(
            self._store,
            self.batch.id,
            input_file.path,
            self.batch.endpoint,
            self._settings.max_line_bytes,
        )
        if result.errors:
            self.batch.errors = result.errors
            self._move(BatchStatus.FAILED)
            return False
        self.batch.total = result.total
        if self._stop_as is None:
            self._move(BatchStatus.IN_PROGRESS)
        return True

    async def _execute(self) -> None:
        input_file = self._files.get(self.batch.input_file_id)
        if input_file is None:
            self._fail("file_not_found", f"input file {self.batch.input_file_id} is gone")
            return
        self._writer = ResultWriter(self._store, self.batch, self._folder())
        self._input_fd = os.open(input_file.path, os.O_RDONLY)
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, self.batch.expires_at - time.time()), self.stop, BatchStatus.EXPIRED
        )
        models = self._store.pending_models(self.batch.id)
        self._work = asyncio.create_task(self._lanes(models))
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await self._work
        finally:
            expiry.cancel()
            self._writer.close()
            os.close(self._input_fd)
        if self._writer.failure is not None:
            raise self._writer.failure
        if self._stop_as is None and self._work.cancelled():
            raise asyncio.CancelledError  # the server is shutting down: resume at next start
        if self._stop_as is None:
            self._move(BatchStatus.FINALIZING)

    async def _lanes(self, models: list[str]) -> None:
        async with asyncio.TaskGroup() as group:
            for model in models:
                group.create_task(self._lane(model))

    async def _lane(self, model: str) -> None:
        """Send every pending request of `model`, keeping the model's slots full."""
        in_flight: set[asyncio.Task[None]] = set()
        missing = False
        after = 0
        try:
            while rows := self._store.pending(self.batch.id, model, after, PAGE_ROWS):
                for row in rows:
                    after = row.line
                    if not missing:
                        try:
                            await self._gates.acquire(model, self.batch.id, self._wait())
                        except ModelMissing:
                            missing = True
                    if missing:
                        self._record(row, _model_missing(self.batch.id, row, model))
                        continue
                    task = asyncio.create_task(self._request(row, model))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.wait(in_flight)
        finally:
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.wait(in_flight)

    async def _request(self, row: RequestRow, model: str) -> None:
        """Send one request line (holding a slot) until it has a final outcome."""
        this_id = request_id(self.batch.id, row.line)
        try:
            body = self._read_body(row)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # the input changed on disk
            self._gates.release(model)
            message = f"line {row.line} of the input file could not be read again: {exc}"
            self._record(row, error_outcome(this_id, row.custom_id, "invalid_line", message))
            return
        attempts = 0
        holding = True
        try:
            while True:
                outcome = await self._sender.attempt(
                    row.custom_id,
                    model,
                    self.batch.endpoint,
                    body,
                    this_id,
                    final=attempts == ATTEMPTS - 1,
                )
                self._gates.release(model)
                holding = False
                if isinstance(outcome, Outcome):
                    self._record(row, outcome)
                    return
                attempts += outcome.counts
                await asyncio.sleep(backoff(attempts) if outcome.counts else 0.05)
                try:
                    await self._gates.acquire(model, self.batch.id, self._wait())
                except ModelMissing:
                    self._record(row, _model_missing(self.batch.id, row, model))
                    return
                holding = True
        finally:
            if holding:
                self._gates.release(model)

    def _read_body(self, row: RequestRow) -> bytes:
        assert self._input_fd is not None
        raw = os.pread(self._input_fd, row.length, row.offset)
        return json.dumps(json.loads(raw)["body"], separators=(",", ":")).encode()

    def _record(self, row: RequestRow, outcome: Outcome) -> None:
        assert self._writer is not None
        self._writer.add(row.line, outcome)
        if self._writer.failure is not None and self._work is not None:
            self._work.cancel()  # results can no longer be kept: stop sending

    def _wait(self) -> float:
        return self._settings.model_wait_seconds

    async def _wrap_up_early(self, status: BatchStatus) -> None:
        """Cancelled or expired: every request without a result gets an error line, so each
        custom_id is in exactly one of the two files, then the files are delivered."""
        writer = ResultWriter(self._store, self.batch, self._folder())
        code = "batch_cancelled" if status is BatchStatus.CANCELLED else "batch_expired"
        try:
            while rows := self._store.pending(self.batch.id, None, 0, PAGE_ROWS):
                for row in rows:
                    message = f"the batch was {status.value} before this request finished"
                    writer.add(
                        row.line,
                        error_outcome(
                            request_id(self.batch.id, row.line), row.custom_id, code, message
                        ),
                    )
                writer.flush()
                if writer.failure is not None:
                    raise writer.failure
                await asyncio.sleep(0)
        finally:
            writer.close()
        self._deliver()
        if self.batch.status is BatchStatus.IN_PROGRESS and status is BatchStatus.CANCELLED:
            self._move(BatchStatus.CANCELLING)
        self._move(status)

    def _finalize(self) -> None:
        if self.batch.status is BatchStatus.IN_PROGRESS:
            self._move(BatchStatus.FINALIZING)
        self._deliver()
        self._move(BatchStatus.COMPLETED)

    def _deliver(self) -> None:
        """Register the output and error files (idempotent: ids follow from the batch's)."""
        folder, suffix = self._folder(), self.batch.id.removeprefix("batch_")
        if self.batch.output_bytes:
            self._files.add_output(
                f"file-{suffix}-output", folder / "output.jsonl", f"{self.batch.id}_output.jsonl"
            )
            self.batch.output_file_id = f"file-{suffix}-output"
        if self.batch.error_bytes:
            self._files.add_output(
                f"file-{suffix}-errors", folder / "errors.jsonl", f"{self.batch.id}_errors.jsonl"
            )
            self.batch.error_file_id = f"file-{suffix}-errors"

    def _folder(self) -> Path:
        return self._settings.folder / self.batch.id

    def _fail(self, code: str, message: str) -> None:
        self.batch.errors = [{"code": code, "message": message, "param": None, "line": None}]
        with contextlib.suppress(BatchWriteFailed, InvalidTransition):
            self._move(BatchStatus.FAILED)

    def _move(self, status: BatchStatus) -> None:
        self.batch.move_to(status)
        self._store.save_batch(self.batch)


def _model_missing(batch_id: str, row: RequestRow, model: str) -> Outcome:
    message = f"no launch served the model {model!r} in time: launch one, then retry the batch"
    return error_outcome(request_id(batch_id, row.line), row.custom_id, "model_not_found", message)
