"""Reading launch logs: incremental chunks for clients, and the line that explains a crash."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MAX_CHUNK_BYTES = 1024 * 1024
ERROR_SCAN_BYTES = 64 * 1024

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Lines that name what went wrong, strongest first: "ValueError: ...", CUDA OOM, a kill.
_ERROR_PATTERNS = (
    re.compile(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b.*:"),
    re.compile(r"out of memory|OutOfMemory|CUDA error|RuntimeError", re.IGNORECASE),
    re.compile(r"\b(ERROR|CRITICAL|FATAL)\b|\bError\b|\bKilled\b"),
)


@dataclass(frozen=True)
class LogChunk:
    offset: int
    next_offset: int
    size: int
    content: str


def read_chunk(path: Path, offset: int, limit: int = MAX_CHUNK_BYTES) -> LogChunk:
    """Read up to `limit` bytes from `offset`, never ending inside a UTF-8 character.

    The bytes of a character cut by the limit, or not yet fully written, are left for the
    next call: `next_offset` points at its first byte.
    """
    limit = max(1, min(limit, MAX_CHUNK_BYTES))
    try:
        with open(path, "rb") as log_file:
            size = log_file.seek(0, 2)
            if offset >= size:
                return LogChunk(offset, offset, size, "")
            log_file.seek(offset)
            data = log_file.read(limit)
    except FileNotFoundError:
        return LogChunk(offset, offset, 0, "")
    data = data[: len(data) - _incomplete_tail_length(data)]
    if not data:
        # A lone partial character at the end: it completes on a later call.
        return LogChunk(offset, offset, size, "")
    return LogChunk(offset, offset + len(data), size, data.decode("utf-8", errors="replace"))


def _incomplete_tail_length(data: bytes) -> int:
    """How many bytes at the end start a UTF-8 character that is not complete."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0b1100_0000 != 0b1000_0000:  # a lead byte (or ASCII)
            needed = _sequence_length(byte)
            return back if needed > back else 0
    return 0  # four continuation bytes: invalid anyway, let the decoder replace them


def _sequence_length(lead: int) -> int:
    if lead >= 0b1111_0000:
        return 4
    if lead >= 0b1110_0000:
        return 3
    if lead >= 0b1100_0000:
        return 2
    return 1


# Failures whose fix lies outside vLLM, and what to tell the user.
_KNOWN_CAUSES = (
    (
        # vLLM's own message, and NCCL's when it cannot make its segment in /dev/shm.
        re.compile(r"Insufficient space in /dev/shm|/dev/shm/nccl|NCCL.*shared memory segment"),
        "the container's /dev/shm is too small for vLLM: run it with --ipc=host or "
        "--shm-size=16g (docker compose: `ipc: host` or `shm_size`)",
    ),
    (
        # Ray's refusal when a launch across boxes joins the cluster with another Ray.
        re.compile(r"Version mismatch: The cluster was started with"),
        "a launch across boxes joins the cluster with the Ray of vLLM's Python, which must "
        "be the version the boxes run: install that Ray version beside vLLM, or pin the "
        "control plane's (the `cluster` extra) to vLLM's",
    ),
)


def log_size(path: Path) -> int:
    """How many bytes the log holds (0 before it exists)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def known_cause(path: Path) -> str | None:
    """Advice for a failure whose cause is known to lie outside vLLM, from the log's tail."""
    lines = _tail_lines(path)
    for pattern, advice in _KNOWN_CAUSES:
        if any(pattern.search(line) for line in lines):
            return advice
    return None


def last_error_line(path: Path) -> str | None:
    """The log line that best explains why the process ended (the exception, the OOM)."""
    lines = _tail_lines(path)
    for pattern in _ERROR_PATTERNS:
        for position in range(len(lines) - 1, -1, -1):
            line = lines[position]
            if pattern.search(line) and not line.startswith("Traceback"):
                return _with_validation_detail(line, lines[position + 1 : position + 2])
    return lines[-1] if lines else None


# vLLM checks its configuration with pydantic: the reason is on the line after the header
# ("1 validation error for ModelConfig" / "  Value error, Sleep mode is not supported ...").
_VALIDATION_HEADER = re.compile(r"ValidationError: \d+ validation errors? for ")


def _with_validation_detail(line: str, following: list[str]) -> str:
    if not following or not _VALIDATION_HEADER.search(line):
        return line
    detail = following[0].split(" [type=", 1)[0]
    return f"{line}: {detail}"[:500]


def _tail_lines(path: Path) -> list[str]:
    try:
        with open(path, "rb") as log_file:
            size = log_file.seek(0, 2)
            log_file.seek(max(0, size - ERROR_SCAN_BYTES))
            text = log_file.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    lines = (_ANSI_ESCAPE.sub("", line).strip() for line in text.splitlines())
    return [line[:500] for line in lines if line]
