"""Starting, watching and ending vLLM process groups.

Each vLLM child is the leader of a new session (and so of a new process group): vLLM's
EngineCore and worker processes join that group, so signalling the group reaches all of them,
and the child does not die with the control plane's terminal or process group. The child
writes straight into its log file, never through a pipe to us, so it keeps running if the
control plane dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

GROUP_POLL_SECONDS = 0.05
# A crashed vLLM's leftover EngineCore/workers get this long to vanish after SIGKILL.
REMNANT_KILL_WAIT_SECONDS = 5.0
MIN_FREE_LOG_BYTES = 1024 * 1024


def spawn(argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `argv` (never through a shell) as a new session writing to `log_path`.

    Refused (OSError) when the log's disk is all but full: vLLM would run blind, its
    errors lost, and the launch would fail later for no reason anyone could read.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    disk = os.statvfs(log_path.parent)
    free = disk.f_bavail * disk.f_frsize
    if free < MIN_FREE_LOG_BYTES:
        raise OSError(
            errno.ENOSPC,
            f"the log directory {log_path.parent} is full ({free // 1024} KiB free); free "
            "space there (VLLM_BOOTSTRAP_LOG_DIR) and launch again",
        )
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )


async def wait_for_exit(process: subprocess.Popen[bytes]) -> int:
    """Wait, without blocking the event loop, for our child to exit; return its code."""
    pidfd = _open_pidfd(process.pid)
    if pidfd is None:
        while process.poll() is None:  # noqa: ASYNC110 - no pidfd: polling is all there is
            await asyncio.sleep(0.1)
        return process.returncode
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
    try:
        if process.poll() is None:
            await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return process.wait()


async def wait_for_adopted_exit(pid: int, start_ticks: int | None) -> int | None:
    """Wait for a process we did not start (a launch re-adopted after a restart) to end.

    Its exit code is known only if it became our child (we run as PID 1, say, and reaped
    it); otherwise None.
    """
    pidfd = _open_pidfd(pid)
    if pidfd is not None and process_start_ticks(pid) != start_ticks:
        os.close(pidfd)  # the pid was reused between the caller's check and the open
        return None
    if pidfd is None:
        while process_start_ticks(pid) == start_ticks and is_alive(pid):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    else:
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
    return _reap_if_ours(pid)


def _reap_if_ours(pid: int) -> int | None:
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if reaped else None


def is_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    stat = _read_stat(pid)
    return stat is not None and stat[0] != "Z"


def process_group(pid: int) -> int | None:
    stat = _read_stat(pid)
    return int(stat[2]) if stat is not None else None


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "not visible from here"


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None  # old kernel, or the process is already gone


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, from /proc/<pid>/stat.

    Together with the pid it names one process for good: a pid the kernel reuses later
    comes with a different start time.
    """
    stat = _read_stat(pid)
    return int(stat[19]) if stat is not None else None


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    members = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            stat = _read_stat(int(entry.name))
            if stat is not None and int(stat[2]) == pgid and stat[0] != "Z":
                members.append(int(entry.name))
    return members


def signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def end_group(pgid: int, grace_seconds: float) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left after the grace period."""
    if not group_members(pgid):
        return
    signal_group(pgid, signal.SIGTERM)
    if await wait_for_group_exit(pgid, grace_seconds):
        return
    signal_group(pgid, signal.SIGKILL)
    await wait_for_group_exit(pgid, 5.0)


async def wait_for_group_exit(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(GROUP_POLL_SECONDS)
    return True


def _read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, so index 0 is the state."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces and parentheses.
    return raw[raw.rfind(b")") + 2 :].decode().split()
