"""A download's record: what it fetches, how far it has got, and how it ended."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from vllm_bootstrap.launches import iso_time


class DownloadState(StrEnum):
    QUEUED = "queued"
    DOWNLOADING = "downloading"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (DownloadState.COMPLETED, DownloadState.FAILED, DownloadState.CANCELLED)


@dataclass
class Download:
    download_id: str
    repo: str
    revision: str
    state: DownloadState = DownloadState.QUEUED
    # Configs and tokenizer only (a launch with --load-format dummy needs no weights).
    weights: bool = True
    commit: str | None = None
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    error: str | None = None
    # What asked for it first ("POST /downloads", "launch 3f2a...").
    reason: str = ""
    # Every file was in the cache already when it was asked for: nothing was fetched.
    cached: bool = False
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal

    @property
    def progress(self) -> float | None:
        return self.bytes_done / self.bytes_total if self.bytes_total else None

    def to_public(self, bytes_per_second: float | None = None) -> dict[str, Any]:
        left = self.bytes_total - self.bytes_done
        live = self.state is DownloadState.DOWNLOADING
        rate = round(bytes_per_second) if live and bytes_per_second else None
        return {
            "id": self.download_id,
            "object": "download",
            "model": self.repo,
            "revision": self.revision,
            "commit": self.commit,
            "state": self.state.value,
            "weights": self.weights,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "files_done": self.files_done,
            "files_total": self.files_total,
            "progress": round(self.progress, 4) if self.progress is not None else None,
            "bytes_per_second": rate,
            "eta_seconds": round(left / rate, 1) if rate else None,
            "error": self.error,
            "reason": self.reason,
            "cached": self.cached,
            "created_at": iso_time(self.created_at),
            "finished_at": iso_time(self.finished_at),
        }

    def to_document(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state.value}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Download:
        known = {name for name in cls.__dataclass_fields__}
        values = {name: value for name, value in document.items() if name in known}
        values["state"] = DownloadState(values["state"])
        return cls(**values)
