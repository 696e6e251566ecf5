"""Appending a batch's results to its output and error files, and recording them as done.

Results are written in groups (every FLUSH_SECONDS, or at FLUSH_LINES): the lines are
appended to the files, then one transaction marks their requests done and records the
files' new lengths. On resume the files are cut back to the recorded lengths, so a line
written just before a kill -9 whose progress was not recorded is dropped, and its request
is sent again: nothing appears twice, nothing recorded is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from vllm_bootstrap.batches.record import Batch
from vllm_bootstrap.batches.requests import Outcome
from vllm_bootstrap.batches.store import BatchStore, BatchWriteFailed

FLUSH_SECONDS = 0.1
FLUSH_LINES = 512
# A batch whose results cannot be recorded for this long fails, rather than piling them up.
GIVE_UP_SECONDS = 30.0
RETRY_SECONDS = 0.25
logger = logging.getLogger("vllm_bootstrap.batches")


class ResultsUnwritable(RuntimeError):
    """Results could not be recorded for GIVE_UP_SECONDS; the message says why."""


class ResultWriter:
    def __init__(
        self,
        store: BatchStore,
        batch: Batch,
        folder: Path,
        on_outcome: Callable[[bool], None] | None = None,
    ) -> None:
        self._store = store
        self._on_outcome = on_outcome  # told of each result: ok or not (the metrics)
        self._batch = batch
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.output_path = folder / "output.jsonl"
        self.error_path = folder / "errors.jsonl"
        self._output = _open_at(self.output_path, batch.output_bytes)
        try:
            self._errors = _open_at(self.error_path, batch.error_bytes)
        except OSError:
            os.close(self._output)
            raise
        self._pending: list[tuple[int, Outcome]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._failing_since: float | None = None
        self._closed = False
        self.failure: ResultsUnwritable | None = None
        # Cleared while results cannot be recorded: senders wait on it, so unrecorded
        # results do not pile up in memory.
        self.writable = asyncio.Event()
        self.writable.set()

    def add(self, line: int, outcome: Outcome) -> None:
        self._pending.append((line, outcome))
        if self._on_outcome is not None:
            self._on_outcome(outcome.ok)
        if self._failing_since is not None:
            return  # the retry timer flushes
        if len(self._pending) >= FLUSH_LINES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> bool:
        """Write and record what is pending; True once nothing is left unrecorded. On a
        failure the lines stay pending, and a timer tries again."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed or self.failure is not None:
            return not self._pending
        if self._pending:
            try:
                self._write(self._pending)
            except (OSError, BatchWriteFailed) as exc:
                self._note_failure(exc)
                return False
            self._pending = []
        self._failing_since = None
        self.writable.set()
        return True

    async def drain(self) -> None:
        """Record everything pending, retrying; ResultsUnwritable once that has failed for
        GIVE_UP_SECONDS. Always a suspension point, also when the first flush succeeds: a
        caller draining page after page (a cancelled batch of a million lines) must let the
        event loop serve everyone else between pages."""
        await asyncio.sleep(0)
        while not self.flush():
            if self.failure is not None:
                raise self.failure
            await asyncio.sleep(RETRY_SECONDS)

    async def close(self) -> None:
        """Drain, then close the files (also when draining gave up)."""
        try:
            await self.drain()
        finally:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            os.close(self._output)
            os.close(self._errors)

    def _write(self, pending: list[tuple[int, Outcome]]) -> None:
        ok = b"".join(outcome.line for _, outcome in pending if outcome.ok)
        failed = b"".join(outcome.line for _, outcome in pending if not outcome.ok)
        succeeded = sum(1 for _, outcome in pending if outcome.ok)
        try:
            _append(self._output, ok)
            _append(self._errors, failed)
            self._count(len(ok), len(failed), succeeded, len(pending) - succeeded)
            try:
                self._store.save_batch(self._batch, (line for line, _ in pending))
            except BaseException:
                self._count(-len(ok), -len(failed), -succeeded, succeeded - len(pending))
                raise
        except BaseException:
            # Back to what is recorded, so the same lines can be written again later.
            try:
                os.ftruncate(self._output, self._batch.output_bytes)
                os.ftruncate(self._errors, self._batch.error_bytes)
            except OSError as exc:
                self.failure = ResultsUnwritable(f"the result files cannot be cut back: {exc}")
            raise

    def _count(self, ok_bytes: int, failed_bytes: int, succeeded: int, failed: int) -> None:
        self._batch.output_bytes += ok_bytes
        self._batch.error_bytes += failed_bytes
        self._batch.completed += succeeded
        self._batch.failed += failed

    def _note_failure(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            self.writable.clear()
            logger.warning("batch %s: results not recorded yet, retrying: %s", self._batch.id, exc)
        if self.failure is None and now - self._failing_since >= GIVE_UP_SECONDS:
            self.failure = ResultsUnwritable(f"results could not be recorded: {exc}")
        if self.failure is not None:
            self.writable.set()  # nothing will be recorded: let the senders see the failure
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(RETRY_SECONDS, self.flush)


def _open_at(path: Path, length: int) -> int:
    """Open for appending, cut back to `length` (what progress recorded as written)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.ftruncate(fd, length)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _append(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
