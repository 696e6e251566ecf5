"""Progress for a terminal: one bar redrawn in place on a TTY, a line per change otherwise
(a log file or a CI job gets a readable record instead of carriage returns)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from vllm_bootstrap.cli.output import duration, shown, size
from vllm_bootstrap.client import Batch, Download, Launch

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


def launch_line(launch: Launch) -> str:
    return stage_line(launch.launch_id, launch.state, launch)


def profile_line(name: str, state: str, launch: Launch | None) -> str:
    """A profile's load: its state ("queued" for GPUs, "loading", "loaded"), then its
    launch's bar and phase once it has one."""
    return stage_line(name, state, launch)


def stage_line(label: str, state: str, launch: Launch | None) -> str:
    """label, state, bar, then the launch's phase and percent. Ready, the bar is full: the
    server has no fraction for "ready", and an empty bar there reads as nothing done."""
    if state in ("ready", "loaded"):
        return f"{label} {state:<13} [{bar(1.0)}] ready"
    if launch is None:
        return f"{label} {state:<13} [{bar(None)}]"
    percent = f" {launch.progress * 100:3.0f}%" if launch.progress is not None else ""
    return f"{label} {state:<13} [{bar(launch.progress)}] {launch.phase or ''}{percent}"


# The stamps that end a batch, by its status (OpenAI's fields; expired_at is not typed).
_ENDED_AT = {
    "completed": "completed_at",
    "failed": "failed_at",
    "cancelled": "cancelled_at",
    "expired": "expired_at",
}


class BatchRate:
    """How fast a batch goes. Ended: its real duration and rate, from the server's stamps
    (in_progress_at, else created_at, to its end). Running: requests finished per second
    since this object's first look (from the server's in_progress_at at the first look
    itself), and the time left at that rate."""

    def __init__(self) -> None:
        self._start: tuple[float, int] | None = None

    def line(self, batch: Batch) -> str:
        counts = batch.request_counts
        total, failed = counts.total, counts.failed
        finished = counts.completed + failed
        fraction = finished / total if total else None
        head = (
            f"{batch.id} {batch.status:<11} [{bar(fraction)}] {finished}/{total} ({failed} failed)"
        )
        pace = ended_pace(batch, finished) if batch.is_ended else self._live_pace(batch, finished)
        return f"{head} {pace}"

    def _live_pace(self, batch: Batch, finished: int) -> str:
        now = time.monotonic()
        if self._start is None:
            # One look tells no rate of its own; the server's stamp says since when it runs
            # (by this machine's clock, which a first look has to trust).
            running = time.time() - batch.in_progress_at if batch.in_progress_at else 0.0
            self._start = (now - running, 0) if running > 0 else (now, finished)
        started_at, started_with = self._start
        rate = (finished - started_with) / (now - started_at) if now > started_at else 0.0
        total = batch.request_counts.total
        eta = f"{(total - finished) / rate:.0f} s left" if rate > 0 and total else "-"
        return f"{rate:.1f} req/s, {eta}"


def ended_pace(batch: Batch, finished: int) -> str:
    """ "in 12 s, 8.3 req/s": the whole run, by the server's own (whole-second) stamps."""
    start = batch.in_progress_at or batch.created_at
    stamp = _ENDED_AT.get(batch.status)
    end = getattr(batch, stamp, None) if stamp else None
    if not isinstance(start, int) or not isinstance(end, int):
        return "-"
    seconds = end - start
    if seconds <= 0:  # within one second: the stamps cannot say how much less
        return f"in under 1 s, over {finished} req/s" if finished else "in under 1 s"
    return f"in {duration(seconds)}, {finished / seconds:.1f} req/s"


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
