"""Noticing that a vLLM child has finished loading.

A model load can take ten minutes, and vLLM may bind its port long before it answers HTTP,
so probing hard all that time would be wasteful and probing rarely would be slow to notice.
Instead the log file is watched (a cheap stat every few tens of milliseconds): vLLM prints a
line when its HTTP server starts, and that line switches the probe to a fast cadence. A slow
background probe covers builds that print no such line.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from vllm_bootstrap.upstream import UpstreamError, fetch_fresh

READY_HINTS = (b"Application startup complete", b"Uvicorn running on", b"Starting vLLM server on")
LOG_POLL_SECONDS = 0.02
SLOW_PROBE_SECONDS = 1.0
FAST_PROBE_SECONDS = 0.02
FAST_PROBE_WINDOW_SECONDS = 15.0
PROBE_TIMEOUT_SECONDS = 2.0
MAX_READ_BYTES = 256 * 1024


class ReadinessProbe:
    """Asks one vLLM server whether it serves: `/health`, then the models of `/v1/models`.

    Each question goes on a fresh connection: a kept-alive socket to a child that died says
    nothing true about its successor on the same port.
    """

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port

    async def served_models(self) -> list[str] | None:
        """The served model names once the server is ready; None before."""
        try:
            status, _ = await self._get(b"/health")
            if status != 200:
                return None
            status, body = await self._get(b"/v1/models")
            if status != 200:
                return None
            payload = json.loads(body)
        except (UpstreamError, TimeoutError, ValueError):
            return None
        names = _model_ids(payload)
        return names or None

    async def _get(self, target: bytes) -> tuple[int, bytes]:
        return await fetch_fresh(self._host, self._port, target, PROBE_TIMEOUT_SECONDS)


def _model_ids(payload: object) -> list[str]:
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        return []
    return [
        entry["id"]
        for entry in payload["data"]
        if isinstance(entry, dict) and isinstance(entry.get("id"), str)
    ]


class LogHintWatcher:
    """Reports when new log output contains one of vLLM's "HTTP server is up" lines, and
    hands every new piece of the log to `on_output` (the start-up progress parser)."""

    def __init__(
        self, path: Path, on_output: Callable[[bytes], None] | None = None, offset: int = 0
    ) -> None:
        self._path = path
        self._offset = offset  # where this run of vLLM began writing (the file is appended to)
        self._carry = b""
        self._on_output = on_output

    def saw_hint(self) -> bool:
        try:
            size = os.stat(self._path).st_size
        except OSError:
            return False
        if size <= self._offset:
            return False
        with open(self._path, "rb") as log_file:
            log_file.seek(self._offset)
            # At most this much per poll: the rest is read on the next ones, so a long log
            # never stalls the event loop.
            new = log_file.read(min(size - self._offset, MAX_READ_BYTES))
        self._offset += len(new)
        if self._on_output is not None:
            self._on_output(new)
        # Keep a short tail so a hint split between two reads is still found.
        window = self._carry + new
        self._carry = window[-64:]
        return any(hint in window for hint in READY_HINTS)


async def wait_until_ready(
    probe: ReadinessProbe,
    log_path: Path,
    on_output: Callable[[bytes], None] | None = None,
    log_offset: int = 0,
) -> list[str]:
    """Return the served model names as soon as the server answers; the log is read from
    `log_offset` (where this run of vLLM began writing)."""
    hints = LogHintWatcher(log_path, on_output, log_offset)
    next_slow_probe = time.monotonic()
    fast_until = 0.0
    while True:
        now = time.monotonic()
        try:
            if hints.saw_hint():
                fast_until = now + FAST_PROBE_WINDOW_SECONDS
        except OSError:
            pass  # an unreadable log costs the fast path only: the slow probe goes on
        fast = now < fast_until
        if fast or now >= next_slow_probe:
            models = await probe.served_models()
            if models is not None:
                return models
            next_slow_probe = time.monotonic() + SLOW_PROBE_SECONDS
        await asyncio.sleep(FAST_PROBE_SECONDS if fast else LOG_POLL_SECONDS)
