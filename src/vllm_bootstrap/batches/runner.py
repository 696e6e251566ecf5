"""One batch's lifetime: validate, send every request (lanes.py), finalize; or stop early.

A run is a task. Cancelling or expiring stops the work in progress (validation, or the
lanes, whose in-flight requests are aborted) and keeps what finished: every request without
a result then gets an error line, so each custom_id is in exactly one of the two files. A
server shutdown stops the task without changing the batch's status, so the next start
resumes it. Every write waits for the database when it is locked or full (until_written),
and a batch that cannot go on ends `failed`, with the reason in `errors`: never left
running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_bootstrap.batches.files import FileDirectory
from vllm_bootstrap.batches.gates import ModelGates
from vllm_bootstrap.batches.lanes import PAGE_ROWS, Lanes
from vllm_bootstrap.batches.record import Batch, BatchStatus, InvalidTransition, request_timeout
from vllm_bootstrap.batches.requests import RequestSender, error_outcome, request_id
from vllm_bootstrap.batches.results import ResultsUnwritable, ResultWriter
from vllm_bootstrap.batches.store import BatchStore, clear_requests, until_written
from vllm_bootstrap.batches.validation import validate

logger = logging.getLogger("vllm_bootstrap.batches")


@dataclass(frozen=True)
class RunSettings:
    folder: Path  # where batches write their output and error files
    model_wait_seconds: float
    max_line_bytes: int
    request_timeout_seconds: float = 600.0  # unless the batch's metadata says otherwise
    output_retention_seconds: int | None = None  # unless the batch sets output_expires_after


@dataclass(frozen=True)
class RunContext:
    """What every batch's run shares."""

    store: BatchStore
    files: FileDirectory
    gates: ModelGates
    sender: RequestSender
    settings: RunSettings
    on_outcome: Callable[[bool], None] | None = None  # each request line's result: ok?


class BatchRun:
    def __init__(self, batch: Batch, context: RunContext) -> None:
        self.batch = batch
        self._context = context
        self._store = context.store
        self._settings = context.settings
        self.stopping_as: BatchStatus | None = None
        self._work: asyncio.Task[Any] | None = None

    async def run(self) -> None:
        try:
            await self._run()
        except Exception as exc:  # whatever it is, the batch must end visibly
            cause = _first_cause(exc)
            if isinstance(cause, (ResultsUnwritable, OSError)):
                logger.error("batch %s failed: %s", self.batch.id, cause)
                await self._fail("storage_error", str(cause))
            else:  # a bug
                logger.exception("batch %s failed", self.batch.id)
                await self._fail("internal_error", f"{type(cause).__name__}: {cause}")

    def stop(self, status: BatchStatus) -> None:
        """Stop early, ending as `status` (cancelled or expired) with what finished."""
        if self.stopping_as is None:
            self.stopping_as = status
            if self._work is not None:
                self._work.cancel()

    async def _run(self) -> None:
        if self.batch.status is BatchStatus.CANCELLING:
            self.stopping_as = BatchStatus.CANCELLED
        if self.batch.status is BatchStatus.VALIDATING:
            await self._stoppable(self._validate())
        if self.batch.status is BatchStatus.IN_PROGRESS and self.stopping_as is None:
            await self._execute()
        if self.batch.is_terminal:
            return
        if self.stopping_as is BatchStatus.EXPIRED and not self._unfinished():
            self.stopping_as = None  # the window closed just as the last result came in
        if self.stopping_as is not None:
            await self._wrap_up_early(self.stopping_as)
        else:
            await self._finalize()

    def _unfinished(self) -> bool:
        return bool(self._store.pending(self.batch.id, None, 0, 1))

    async def _stoppable(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` so that stop() cancels it. A cancel of this run itself (the server
        shutting down) goes on up, so the batch resumes at the next start."""
        self._work = asyncio.create_task(work)
        try:
            await self._work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self.stopping_as is None or (current is not None and current.cancelling()):
                raise

    async def _validate(self) -> None:
        input_file = self._context.files.get(self.batch.input_file_id)
        if input_file is None:
            await self._fail("file_not_found", f"input file {self.batch.input_file_id} is gone")
            return
        await clear_requests(self._store, self.batch.id)  # of a validation cut off
        result = await validate(
            self._store,
            self.batch.id,
            input_file.path,
            self.batch.endpoint,
            self._settings.max_line_bytes,
        )
        errors = result.errors or self._models_out_of_reach()
        if errors:
            if not result.errors:
                await clear_requests(self._store, self.batch.id)
            self.batch.errors = errors
            await self._move(BatchStatus.FAILED)
            return
        self.batch.total = result.total
        if self.stopping_as is None:
            await self._move(BatchStatus.IN_PROGRESS)

    def _models_out_of_reach(self) -> list[dict[str, Any]]:
        """A scoped key's batch names only models of its list: the others are, to it, as if
        they did not exist (validation's errors, in OpenAI's shape)."""
        if self.batch.owner is None:
            return []
        models = self._store.pending_models(self.batch.id)
        return [
            {
                "code": "model_not_found",
                "message": f"The model `{model}` does not exist",
                "param": "model",
                "line": None,
            }
            for model in self._context.sender.keyed.out_of_reach(self.batch.owner, models)
        ]

    async def _execute(self) -> None:
        input_file = self._context.files.get(self.batch.input_file_id)
        if input_file is None:
            await self._fail("file_not_found", f"input file {self.batch.input_file_id} is gone")
            return
        input_fd = os.open(input_file.path, os.O_RDONLY)
        try:
            writer = ResultWriter(self._store, self.batch, self._folder(), self._context.on_outcome)
        except BaseException:
            os.close(input_fd)
            raise
        lanes = Lanes(
            self.batch,
            self._store,
            self._context.gates,
            self._context.sender,
            writer,
            input_fd,
            self._settings.model_wait_seconds,
            request_timeout(self.batch, self._settings.request_timeout_seconds),
        )
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, self.batch.expires_at - time.time()), self.stop, BatchStatus.EXPIRED
        )
        try:
            await self._stoppable(lanes.run())
        finally:
            expiry.cancel()
            os.close(input_fd)
            await writer.close()  # raises ResultsUnwritable when results could not be kept
        if writer.failure is not None:
            raise writer.failure

    async def _wrap_up_early(self, status: BatchStatus) -> None:
        """Cancelled or expired: every request without a result gets an error line, so
        each custom_id is in exactly one of the two files, then the files are delivered."""
        if self.batch.total == 0:  # stopped before validation finished
            await clear_requests(self._store, self.batch.id)
        writer = ResultWriter(self._store, self.batch, self._folder(), self._context.on_outcome)
        code = "batch_cancelled" if status is BatchStatus.CANCELLED else "batch_expired"
        message = f"the batch was {status.value} before this request finished"
        after = 0
        try:
            while rows := self._store.pending(self.batch.id, None, after, PAGE_ROWS):
                for row in rows:
                    line_id = request_id(self.batch.id, row.line)
                    writer.add(row.line, error_outcome(line_id, row.custom_id, code, message))
                after = rows[-1].line
                await writer.drain()
        finally:
            await writer.close()
        await self._deliver()
        if status is BatchStatus.CANCELLED and self.batch.status is not BatchStatus.CANCELLING:
            await self._move(BatchStatus.CANCELLING)
        await self._move(status)

    async def _finalize(self) -> None:
        if self.batch.status is BatchStatus.IN_PROGRESS:
            await self._move(BatchStatus.FINALIZING)
        await self._deliver()
        await self._move(BatchStatus.COMPLETED)

    async def _deliver(self) -> None:
        """Register the output and error files (idempotent: ids follow from the batch's)."""
        suffix = self.batch.id.removeprefix("batch_")
        if self.batch.output_bytes:
            self.batch.output_file_id = f"file-{suffix}-output"
            await self._register(self.batch.output_file_id, "output")
        if self.batch.error_bytes:
            self.batch.error_file_id = f"file-{suffix}-errors"
            await self._register(self.batch.error_file_id, "errors")

    async def _register(self, file_id: str, kind: str) -> None:
        path, name = self._folder() / f"{kind}.jsonl", f"{self.batch.id}_{kind}.jsonl"
        keep = self.batch.output_expires_after or self._settings.output_retention_seconds
        owner = self.batch.owner
        await self._write(lambda: self._context.files.add_output(file_id, path, name, keep, owner))

    def _folder(self) -> Path:
        return self._settings.folder / self.batch.id

    async def _fail(self, code: str, message: str) -> None:
        self.batch.errors = [{"code": code, "message": message, "param": None, "line": None}]
        try:
            await self._move(BatchStatus.FAILED)
        except InvalidTransition as exc:  # it had ended already
            logger.error("batch %s: could not record its failure: %s", self.batch.id, exc)

    async def _move(self, status: BatchStatus) -> None:
        """Change status; the record is written before the run goes on (until_written)."""
        self.batch.move_to(status)
        await self._write(lambda: self._store.save_batch(self.batch))

    async def _write(self, write: Callable[[], object]) -> None:
        await until_written(write, self.batch.id)


def _first_cause(exc: BaseException) -> BaseException:
    """The exception itself, or the first one inside a group (from the lanes' TaskGroup)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
