"""The host's figures for GET /stats: load, CPUs, memory, and the disks that matter here.

Read from the standard library and /proc, so the answer costs a few system calls and works
in any container.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

MEMINFO = Path("/proc/meminfo")


def host_stats(folders: dict[str, Path]) -> dict[str, Any]:
    """Load averages, CPU count, memory, and the disk under each named folder."""
    load1, load5, load15 = os.getloadavg()
    return {
        "load_average": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "cpu_count": os.cpu_count(),
        "memory": memory_stats(),
        "disks": {name: disk_stats(path) for name, path in folders.items()},
    }


def memory_stats(meminfo: Path = MEMINFO) -> dict[str, int | None]:
    fields = _meminfo(meminfo)
    total, available = fields.get("MemTotal"), fields.get("MemAvailable")
    return {
        "total_bytes": total,
        "available_bytes": available,
        "used_bytes": total - available if total is not None and available is not None else None,
    }


def disk_stats(path: Path) -> dict[str, Any]:
    """The file system holding `path` (its nearest existing folder, if it is not made yet)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        usage = shutil.disk_usage(existing)
    except OSError as exc:
        return {"path": str(path), "error": exc.strerror}
    return {
        "path": str(path),
        "total_bytes": usage.total,
        "used_bytes": usage.used,
        "free_bytes": usage.free,
    }


def _meminfo(path: Path) -> dict[str, int]:
    try:
        text = path.read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return fields
