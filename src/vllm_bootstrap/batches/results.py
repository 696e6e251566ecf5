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
from pathlib import Path

from vllm_bootstrap.batches.record import Batch
from vllm_bootstrap.batches.requests import Outcome
from vllm_bootstrap.batches.store import BatchStore, BatchWriteFailed

FLUSH_SECONDS = 0.1
FLUSH_LINES = 512
# A batch whose results cannot be recorded for this long fails, rather than piling them up.
GIVE_UP_SECONDS = 30.0
logger = logging.getLogger("vllm_bootstrap.batches")


class ResultsUnwritable(RuntimeError):
    """Results could not be recorded for GIVE_UP_SECONDS; the message says why."""


class ResultWriter:
    def __init__(self, store: BatchStore, batch: Batch, folder: Path) -> None:
        self._store = store
        self._batch = batch
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.output_path = folder / "output.jsonl"
        self.error_path = folder / "errors.jsonl"
        self._output = _open_at(self.output_path, batch.output_bytes)
        self._errors = _open_at(self.error_path, batch.error_bytes)
        self._pending: list[tuple[int, Outcome]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._failing_since: float | None = None
        self.failure: ResultsUnwritable | None = None

    def add(self, line: int, outcome: Outcome) -> None:
        self._pending.append((line, outcome))
        if len(self._pending) >= FLUSH_LINES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write and record what is pending; on failure keep it for the next try."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending or self.failure is not None:
            return
        pending = self._pending
        ok = b"".join(outcome.line for _, outcome in pending if outcome.ok)
        failed = b"".join(outcome.line for _, outcome in pending if not outcome.ok)
        succeeded = sum(1 for _, outcome in pending if outcome.ok)
        try:
            _append(self._output, ok)
            _append(self._errors, failed)
            self._count(len(ok), len(failed), succeeded, len(pending) - succeeded)
            try:
                self._store.save_batch(self._batch, (line for line, _ in pending))
            except BatchWriteFailed:
                self._count(-len(ok), -len(failed), -succeeded, succeeded - len(pending))
                raise
        except (OSError, BatchWriteFailed) as exc:
            # Back to what is recorded, so the same lines can be written again later.
            os.ftruncate(self._output, self._batch.output_bytes)
            os.ftruncate(self._errors, self._batch.error_bytes)
            self._note_failure(exc)
            return
        self._pending = []
        self._failing_since = None

    def _count(self, ok_bytes: int, failed_bytes: int, succeeded: int, failed: int) -> None:
        self._batch.output_bytes += ok_bytes
        self._batch.error_bytes += failed_bytes
        self._batch.completed += succeeded
        self._batch.failed += failed

    def close(self) -> None:
        self.flush()
        os.close(self._output)
        os.close(self._errors)

    def _note_failure(self, exc: Exception) -> None:
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        logger.warning("batch %s: results not recorded yet: %s", self._batch.id, exc)
        if now - self._failing_since >= GIVE_UP_SECONDS:
            self.failure = ResultsUnwritable(f"results could not be recorded: {exc}")
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(1.0, self.flush)


def _open_at(path: Path, length: int) -> int:
    """Open for appending, cut back to `length` (what progress recorded as written)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.ftruncate(fd, length)
    return fd


def _append(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
