"""A batch's fields and status transitions, and the object OpenAI's clients expect.

    validating -> in_progress -> finalizing -> completed
         |              |
         +-> failed     +-> cancelling -> cancelled      (POST /v1/batches/{id}/cancel)
                        +-> expired                      (past its completion window)

A batch still `validating` may be cancelled too; one that cannot write its results (a full
disk) fails from wherever it is. `expired` keeps what finished, like `cancelled`.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


_S = BatchStatus
TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    _S.VALIDATING: frozenset({_S.IN_PROGRESS, _S.FAILED, _S.CANCELLING}),
    _S.IN_PROGRESS: frozenset({_S.FINALIZING, _S.CANCELLING, _S.EXPIRED, _S.FAILED}),
    _S.FINALIZING: frozenset({_S.COMPLETED, _S.FAILED}),
    _S.CANCELLING: frozenset({_S.CANCELLED, _S.FAILED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.EXPIRED: frozenset(),
}
TERMINAL = frozenset(status for status, nexts in TRANSITIONS.items() if not nexts)
# The timestamp OpenAI's batch object sets on entering each status.
_STAMPS = {
    _S.IN_PROGRESS: "in_progress_at",
    _S.FINALIZING: "finalizing_at",
    _S.COMPLETED: "completed_at",
    _S.FAILED: "failed_at",
    _S.CANCELLING: "cancelling_at",
    _S.CANCELLED: "cancelled_at",
    _S.EXPIRED: "expired_at",
}
COMPLETION_WINDOWS = {"24h": 24 * 3600.0}


class InvalidTransition(RuntimeError):
    pass


# A batch's own request timeout, in its metadata (OpenAI's batches take no such field).
REQUEST_TIMEOUT_KEY = "request_timeout_seconds"
MIN_REQUEST_TIMEOUT_SECONDS = 0.1
MAX_REQUEST_TIMEOUT_SECONDS = 86_400.0
_PLAIN_NUMBER = re.compile(r"[0-9]{1,5}(\.[0-9]{1,3})?")  # not float()'s "1e-300" or "١٢٠"


def parse_request_timeout(raw: str) -> float | None:
    """The metadata's timeout in seconds, or None when it is not one."""
    if not _PLAIN_NUMBER.fullmatch(raw):
        return None
    seconds = float(raw)
    return (
        seconds if MIN_REQUEST_TIMEOUT_SECONDS <= seconds <= MAX_REQUEST_TIMEOUT_SECONDS else None
    )


# `metadata={"priority": "live"}` makes a batch urgent: its lines do not yield to live ones.
PRIORITY_KEY = "priority"
PRIORITIES = ("batch", "live")


def is_urgent(batch: Batch) -> bool:
    return (batch.metadata or {}).get(PRIORITY_KEY) == "live"


def request_timeout(batch: Batch, default: float) -> float:
    """How long each of the batch's requests may wait for its answer."""
    raw = (batch.metadata or {}).get(REQUEST_TIMEOUT_KEY)
    seconds = parse_request_timeout(raw) if raw is not None else None
    return seconds if seconds is not None else default


@dataclass
class Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    expires_at: int
    status: BatchStatus = BatchStatus.VALIDATING
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    # Bytes of the output and error files that are recorded as written: on resume, anything
    # past these offsets was written after the last recorded progress and is cut off.
    output_bytes: int = 0
    error_bytes: int = 0
    stamps: dict[str, int] = field(default_factory=dict)
    # OpenAI's output_expires_after, in seconds from the output files' creation; None: the
    # server's default retention.
    output_expires_after: int | None = None
    # The scoped key that created it (None: the access key): only it sees the batch, and
    # its lines are that key's requests (its models, limits, priority and usage).
    owner: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    def move_to(self, status: BatchStatus) -> None:
        if status not in TRANSITIONS[self.status]:
            raise InvalidTransition(f"batch {self.id}: {self.status} -> {status}")
        self.status = status
        if status in _STAMPS:
            self.stamps[_STAMPS[status]] = int(time.time())

    def to_document(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Batch:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in document.items() if key in known}
        values["status"] = BatchStatus(values["status"])
        return cls(**values)

    def to_public(self) -> dict[str, Any]:
        """The batch object of OpenAI's API, as its clients parse it."""
        public: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.value,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }
        if self.output_expires_after is not None:
            public["output_expires_after"] = {
                "anchor": "created_at",
                "seconds": self.output_expires_after,
            }
        for stamp in _STAMPS.values():
            public[stamp] = self.stamps.get(stamp)
        return public
