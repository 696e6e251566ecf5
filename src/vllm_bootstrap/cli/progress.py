"""Progress for a terminal: one bar redrawn in place on a TTY, a line per change otherwise
(a log file or a CI job gets a readable record instead of carriage returns)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from vllm_bootstrap.cli.output import duration, shown, size
from vllm_bootstrap.client import Batch, Download

BAR_WIDTH = 30


def bar(fraction: float | None, width: int = BAR_WIDTH) -> str:
    if fraction is None:
        return " " * width
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "#" * filled + "." * (width - filled)


class Progress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._live = self._stream.isatty()
        self._last = ""

    def show(self, text: str) -> None:
        text = shown(text)  # it quotes the server: phases, states, ids
        if text == self._last:
            return
        self._last = text
        if self._live:
            self._stream.write(f"\r\x1b[2K{text}")
        else:
            self._stream.write(f"{text}\n")
        self._stream.flush()

    def done(self) -> None:
        if self._live and self._last:
            self._stream.write("\n")
            self._stream.flush()


def launch_line(launch_id: str, state: str, phase: str | None, fraction: float | None) -> str:
    percent = f" {fraction * 100:3.0f}%" if fraction is not None else ""
    return f"{launch_id} {state:<13} [{bar(fraction)}] {phase or ''}{percent}"


class BatchRate:
    """Requests done per second since the first look, and the time left at that rate."""

    def __init__(self) -> None:
        self._start: tuple[float, int] | None = None

    def line(self, batch: Batch) -> str:
        counts = batch.request_counts
        total, failed = counts.total, counts.failed
        finished = counts.completed + failed
        now = time.monotonic()
        if self._start is None:
            self._start = (now, finished)
        started_at, started_with = self._start
        rate = (finished - started_with) / (now - started_at) if now > started_at else 0.0
        eta = f"{(total - finished) / rate:.0f} s left" if rate > 0 and total else "-"
        fraction = finished / total if total else None
        return (
            f"{batch.id} {batch.status:<11} [{bar(fraction)}] {finished}/{total} "
            f"({failed} failed) {rate:.1f} req/s, {eta}"
        )


def download_line(download: Download) -> str:
    """id, state, bar, bytes and files done of their totals, then the rate and time left
    while the server has measured them."""
    parts = [
        f"{download.id} {download.state:<11} [{bar(download.progress)}] "
        f"{size(download.bytes_done)} / {size(download.bytes_total)}",
        f"{download.files_done}/{download.files_total} files",
    ]
    if download.bytes_per_second:
        parts.append(f"{size(download.bytes_per_second)}/s")
    if download.eta_seconds is not None:
        parts.append(f"{duration(download.eta_seconds)} left")
    return ", ".join(parts)
