"""Finding a launch's processes again after the control plane restarted.

vLLM children run in sessions of their own and outlive the control plane. On start-up each
launch that was live is either re-adopted (its process is still the one we started) or
settled as failed, after ending whatever is left of it. Two facts make this safe:

- a process is identified by its pid *and* its start time (/proc/<pid>/stat), so a pid the
  kernel handed to an unrelated process is never mistaken for ours;
- every child carries LAUNCH_MARKER_ENV=<launch id> in its environment, inherited by its
  EngineCore and workers, so even a process whose pid never reached the database (the
  control plane killed between fork and write) is found.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from vllm_bootstrap.launches import Launch
from vllm_bootstrap.supervision import processes

# Not VLLM_*: vLLM warns about every VLLM_ variable it does not know.
LAUNCH_MARKER_ENV = "BOOTSTRAP_LAUNCH_ID"
# Which box's Ray node started a launch (cluster/): its state folder, unique to the box.
BOX_MARKER_ENV = "BOOTSTRAP_BOX"


def find_leader(launch: Launch) -> int | None:
    """The pid of the launch's still-running vLLM API server, if it is still ours."""
    if launch.pid is not None:
        ticks = processes.process_start_ticks(launch.pid)
        same = ticks is not None and ticks == launch.process_start_ticks
        # A zombie (exited, not yet reaped by its new parent) is gone for our purposes.
        return launch.pid if same and processes.is_alive(launch.pid) else None
    # The pid was never recorded: look for the process group leader carrying our marker.
    for pid in marked_processes(launch.launch_id):
        if processes.process_group(pid) == pid:
            return pid
    return None


def marked_processes(launch_id: str) -> list[int]:
    """Every live process whose environment carries this launch's marker."""
    wanted = f"{LAUNCH_MARKER_ENV}={launch_id}".encode()
    return [pid for pid, environ in _live_environments() if wanted in environ]


def launches_of_box(box: str) -> list[int]:
    """The live processes of launches started on this box by its Ray node (they carry both
    the launch marker and BOX_MARKER_ENV=`box`): what a worker box ends when it stops, or
    finds left when it starts again."""
    mine = f"{BOX_MARKER_ENV}={box}".encode()
    launch = f"{LAUNCH_MARKER_ENV}=".encode()
    return [
        pid
        for pid, environ in _live_environments()
        if mine in environ and any(item.startswith(launch) for item in environ)
    ]


def _live_environments() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, its environment's NAME=value items) of every live process we may read."""
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                environ = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if processes.is_alive(int(entry.name)):
                yield int(entry.name), environ


def kill_remnants(launch_id: str) -> list[int]:
    """SIGKILL whatever is left of a launch whose API server is gone; returns their pids."""
    remnants = marked_processes(launch_id)
    for pid in remnants:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return remnants
