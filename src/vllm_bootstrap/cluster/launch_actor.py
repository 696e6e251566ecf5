"""A launch's vLLM on any box of the cluster: one small Ray actor per launch, pinned to its
box's node, which starts vLLM there in a process group of its own (as the supervisor does
on the head: supervision/processes.py), says where it listens, serves its log by offset,
reports its exit and stops it (SIGTERM to the group, SIGKILL after the grace).

The actor is named after the launch and detached: it outlives the driver that started it,
so another driver finds it by name (`find`) while the cluster runs. It dies with its node,
which is how the head learns that a node died under a launch (its calls raise Ray's
ActorDiedError). Its vLLM carries the box's mark (BOX_MARKER_ENV): a worker box ends the
launches it ran when it stops, starts, or sees its Ray node end (worker.py). The head
reaches it through `RemoteLaunch` (remote_launch.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from vllm_bootstrap.cluster.node_readings import pinned_to
from vllm_bootstrap.cluster.ray_node import LOG_DIR_VARIABLE
from vllm_bootstrap.supervision import (
    REMNANT_KILL_WAIT_SECONDS,
    end_group,
    kill_remnants,
    launch_environment,
    signal_group,
    spawn,
    wait_for_exit,
    wait_for_group_exit,
)

NAMESPACE = "vllm-bootstrap"
NAME_PREFIX = "launch-"
MAX_LOG_READ_BYTES = 1024 * 1024


class LaunchOnNode:
    """Runs in a Ray worker process on the launch's box (an async actor: one event loop)."""

    def __init__(
        self, launch_id: str, gpu_ids: list[int], env: dict[str, str], ray_driver: bool = False
    ) -> None:
        self._launch_id = launch_id
        self._gpu_ids = gpu_ids
        self._env = env
        self._ray_driver = ray_driver  # a launch across boxes: its vLLM joins the cluster
        folder = os.environ.get(LOG_DIR_VARIABLE) or Path(tempfile.gettempdir(), "vllm-bootstrap")
        # A folder of its own: where the head mirrors it (its own log folder) may be this
        # very folder, on a volume the boxes share.
        self.log_path = Path(folder) / "node-launches" / f"{launch_id}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._stop_grace = 0.0

    async def start(self, argv: list[str]) -> dict[str, Any]:
        """Start vLLM (`argv`, never through a shell); its pid and this box's address."""
        import ray

        if self._process is not None and self._process.poll() is None:
            raise RuntimeError(f"launch {self._launch_id} has started its vLLM already")
        env = launch_environment(self._launch_id, self._gpu_ids, self._env, self._ray_driver)
        self._process, self._stopping = spawn(argv, env, self.log_path), False
        return {"pid": self._process.pid, "address": ray.util.get_node_ip_address()}

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    async def reap(self) -> None:
        """End what is left of an exited vLLM (its group, and what left the group)."""
        if self._process is not None:
            await self._end_remnants(self._process.pid)

    async def wait(self) -> int:
        """Its exit code, once it has exited and nothing is left of its group (a crash
        leaves EngineCore and workers with nothing to finish: SIGKILL)."""
        if self._process is None:
            raise RuntimeError(f"launch {self._launch_id} has no vLLM: start() it first")
        process = self._process
        code = await wait_for_exit(process)
        if self._stopping:  # the stop escalates on its own schedule: wait for it
            await wait_for_group_exit(process.pid, self._stop_grace + REMNANT_KILL_WAIT_SECONDS)
        await self._end_remnants(process.pid)
        return code

    async def _end_remnants(self, group: int) -> None:
        # A crash leaves EngineCore and workers with nothing to finish; a process that left
        # the group still carries the launch's marker.
        signal_group(group, signal.SIGKILL)
        await wait_for_group_exit(group, REMNANT_KILL_WAIT_SECONDS)
        kill_remnants(self._launch_id)

    def read_log(self, offset: int, limit: int = MAX_LOG_READ_BYTES) -> tuple[bytes, int]:
        """Up to `limit` bytes of its log from `offset`, and the log's size."""
        try:
            with open(self.log_path, "rb") as log:
                size = os.fstat(log.fileno()).st_size
                log.seek(max(0, offset))
                return log.read(max(0, min(limit, MAX_LOG_READ_BYTES))), size
        except FileNotFoundError:
            return b"", 0

    async def stop(self, grace_seconds: float) -> int | None:
        """SIGTERM to vLLM's group, SIGKILL after `grace_seconds`; its exit code."""
        if self._process is None:
            return None
        self._stopping, self._stop_grace = True, grace_seconds
        await end_group(self._process.pid, grace_seconds)
        # Never a blocking wait here: a leader stuck in the kernel would freeze every call.
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(wait_for_exit(self._process), REMNANT_KILL_WAIT_SECONDS)
        return None


def start_on(
    node_id: str,
    launch_id: str,
    gpu_ids: list[int],
    env: dict[str, str],
    ray_driver: bool = False,
) -> Any:
    """The launch's actor on node `node_id` (Ray's handle); named, detached, never
    restarted by Ray (a launch's restarts are the supervisor's to decide)."""
    import ray

    # Calls are coroutines, cheap to run side by side: a head's pending `wait` of an earlier
    # run may linger beside a restarted head's own.
    actor = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=1000)(LaunchOnNode)
    return actor.options(
        name=NAME_PREFIX + launch_id,
        namespace=NAMESPACE,
        lifetime="detached",
        scheduling_strategy=pinned_to(node_id),
    ).remote(launch_id, gpu_ids, env, ray_driver)


def find(launch_id: str) -> Any | None:
    """The actor of a launch started before (by this head or an earlier run of it)."""
    import ray

    try:
        return ray.get_actor(NAME_PREFIX + launch_id, namespace=NAMESPACE)
    except ValueError:  # Ray's word for "no actor of that name"
        return None
