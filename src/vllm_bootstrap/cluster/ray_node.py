"""This box's Ray node: `ray start --block` as a child of ours, in a process group of its
own, so that stopping it (SIGTERM to the group, SIGKILL after a grace) leaves nothing
behind.

The head's node listens on VLLM_BOOTSTRAP_RAY_PORT; a worker's joins the head named by
VLLM_BOOTSTRAP_JOIN. Each declares the GPUs our nvidia-smi reading found (so Ray and the
control plane count the same GPUs), and advertises VLLM_BOOTSTRAP_NODE_ADDRESS when set
(the box's address on the private network the boxes share). Ray's processes get the
server's environment without our settings (the access key is one), plus Ray's token.

A head's node outlives a restart of the control plane (a kill -9, or an exit with
VLLM_BOOTSTRAP_DETACH_ON_EXIT): the next start takes it over (`adopt_leftover`), so the
cluster, its workers and the launches on them live on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from vllm_bootstrap.cluster.ray_env import ray_environment
from vllm_bootstrap.config import SETTING_VARIABLES
from vllm_bootstrap.log_text import escaped
from vllm_bootstrap.supervision import (
    BOX_MARKER_ENV,
    end_group,
    group_members,
    launches_of_box,
    process_group,
    process_start_ticks,
)

logger = logging.getLogger("vllm_bootstrap.cluster")
LOG_DIR_VARIABLE = "VLLM_BOOTSTRAP_LOG_DIR"
# The head's Ray checks each node every second and counts it dead after five misses in a
# row (Ray's defaults take 15 s or more): a box that dies fails its launches within seconds,
# and a box busy for a moment (loading weights, a network blip) is not taken for dead.
HEAD_HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "2000",
    "RAY_health_check_failure_threshold": "5",
}


@dataclass(frozen=True)
class NodeSpec:
    """What `ray start` is told: a head (`head_port`) or a worker (`join`: HOST:PORT)."""

    temp_dir: Path | None = None
    gpu_count: int = 0
    head_port: int | None = None
    join: str | None = None
    node_address: str | None = None
    extra_args: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block"]
        if self.join is None:
            argv += ["--head", "--port", str(self.head_port), "--include-dashboard=false"]
        else:
            argv += ["--address", self.join]
        if self.temp_dir is not None:
            argv += ["--temp-dir", str(self.temp_dir)]
        if self.node_address is not None:
            argv += ["--node-ip-address", self.node_address]
        argv += ["--num-gpus", str(self.gpu_count), "--disable-usage-stats"]
        return argv + list(self.extra_args)


class RayNode:
    """The `ray start --block` process of this box."""

    def __init__(self, spec: NodeSpec, access_key: str, log_path: Path, pid_file: Path) -> None:
        self.spec = spec
        self._access_key = access_key
        self._log_path = log_path
        self._pid_file = pid_file  # outlives a kill -9 of ours: the next start finds it
        self._process: subprocess.Popen[bytes] | None = None
        # A node a previous run of ours started and this one took over: (pid, start ticks).
        self._adopted: tuple[int, int | None] | None = None

    def start(self) -> None:
        self._adopted = None
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {key: value for key, value in os.environ.items() if key not in SETTING_VARIABLES}
        env.update(ray_environment(self._access_key))
        # Launches on this box log here (launch_actor.py runs in Ray's processes), and
        # carry this box's mark, so that the box ends them when it stops.
        env[LOG_DIR_VARIABLE] = str(self._log_path.parent)
        env[BOX_MARKER_ENV] = self.box
        if self.spec.join is None:
            env.update(HEAD_HEALTH_CHECKS)
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.spec.argv(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stopped as one, not by our Ctrl-C
            )
        ticks = process_start_ticks(self._process.pid)
        self._pid_file.write_text(f"{self._process.pid} {ticks}\n")
        role = "head" if self.spec.join is None else f"worker joining {self.spec.join}"
        logger.info(
            "Ray node (%s) started, pid %d; log: %s", role, self._process.pid, self._log_path
        )

    @property
    def box(self) -> str:
        """What marks this box's launches: its state folder (where the pid file is)."""
        return str(self._pid_file.parent)

    def end_launches(self, grace_seconds: float) -> None:
        """End the launches this box's Ray node started (their actors end with the node;
        their vLLM would run on, holding the GPUs)."""
        leaders = {pid for pid in launches_of_box(self.box) if process_group(pid) == pid}
        for leader in leaders:
            logger.info("ending launch process group %d, started here through Ray", leader)
            end_group_now(leader, grace_seconds)

    def log_tail(self, lines: int = 3) -> str:
        """Its log's last lines, on one line (escaped: it quotes what Ray printed)."""
        try:
            text = self._log_path.read_bytes()[-4096:].decode(errors="replace")
        except OSError:
            return ""
        kept = [line.strip() for line in text.splitlines() if line.strip()]
        return escaped(" | ".join(kept[-lines:]))

    def wait(self) -> int | None:
        """Block until it has exited (None: never started); its exit code (None too for a
        node taken over from a previous run: not our child)."""
        if self._adopted is not None:
            _wait_for_end(*self._adopted)
            return None
        return None if self._process is None else self._process.wait()

    @property
    def running(self) -> bool:
        if self._adopted is not None:
            pid, ticks = self._adopted
            return process_start_ticks(pid) == ticks
        return self._process is not None and self._process.poll() is None

    def stop(self, grace_seconds: float) -> None:
        """SIGTERM to its group (Ray stops its processes), SIGKILL to what is left after
        `grace_seconds` in all; the leader is reaped last, so the group's id cannot be
        another's meanwhile."""
        if self._adopted is not None:
            pid, _ticks = self._adopted
            if self.running:
                end_group_now(pid, grace_seconds)
        elif self._process is not None:
            end_group_now(self._process.pid, grace_seconds)
            self._process.wait()
        else:
            return
        self._pid_file.unlink(missing_ok=True)
        logger.info("Ray node stopped")

    def adopt_leftover(self) -> bool:
        """Take over the Ray node a previous run of ours left running (found by the pid
        file, the same process by its start time); False when there is none."""
        leftover = self._leftover()
        if leftover is None:
            return False
        self._adopted, self._process = leftover, None
        logger.info("Ray node: took over the one a previous run left (pid %d)", leftover[0])
        return True

    def end_leftover(self, grace_seconds: float) -> None:
        """End the Ray node a previous run of ours left (killed before it could stop it),
        found by the pid file: its port and its session would be in the way."""
        leftover = self._leftover()
        if leftover is not None:
            logger.warning("Ray node: ending the one a previous run left (pid %d)", leftover[0])
            end_group_now(leftover[0], grace_seconds)
        self._pid_file.unlink(missing_ok=True)

    def _leftover(self) -> tuple[int, int] | None:
        try:
            pid, ticks = (int(part) for part in self._pid_file.read_text().split())
        except (OSError, ValueError):
            return None
        if process_start_ticks(pid) == ticks and group_members(pid):
            return pid, ticks
        return None


def pid_file_in(state_dir: Path) -> Path:
    """Where a box keeps its Ray node's pid: named after the box, as boxes may share the
    volume their state folder is on (two boxes must never end or adopt each other's)."""
    return state_dir / f"ray-node.{socket.gethostname()}.pid"


def _wait_for_end(pid: int, ticks: int | None) -> None:
    """Block until process `pid` (not our child) has ended."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return  # gone already
    try:
        if process_start_ticks(pid) == ticks:  # still the one we took over, not a reused pid
            select.select([pidfd], [], [])
    finally:
        os.close(pidfd)


def end_group_now(group: int, grace_seconds: float) -> None:
    """The supervisor's own `end_group` (SIGTERM, then SIGKILL after the grace, only while
    the group has live members), from the threads Ray's calls run in."""
    asyncio.run(end_group(group, grace_seconds))
