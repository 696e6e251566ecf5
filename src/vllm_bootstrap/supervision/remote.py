"""What the supervisor needs of the other boxes of a cluster, named here so that supervision
never imports Ray: the cluster package (cluster/remote_launch.py) provides both.

A launch on another box is the same record, state table and `LaunchRun` as a local one; only
its process is reached through a `RemoteProcess` (a Ray actor on that box) instead of this
box's process table, and its log is mirrored into the head's log file, so readiness, load
progress, GET /logs and the error of a crash read it as they read a local one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from vllm_bootstrap.launches import Launch


@dataclass(frozen=True)
class Box:
    """Another box of the cluster, as placement sees it."""

    node_id: str
    address: str
    gpus: list[int] = field(default_factory=list)
    # No nvidia-smi there: launches run on its CPU, owning no GPU.
    cpu_only: bool = False


class RemoteProcess(Protocol):
    """One launch's vLLM on another box."""

    # Why the launch's box can no longer be reached (it left the cluster); None while it can.
    lost: str | None

    async def start(self, argv: list[str], env: dict[str, str]) -> int:
        """Start vLLM there (again, after a crash); its pid on that box."""
        ...

    async def wait(self) -> int | None:
        """Its exit code once it exited and its process group is gone; None when its box
        was lost (`lost` says why)."""
        ...

    async def stop(self, grace_seconds: float) -> None:
        """SIGTERM to its process group, SIGKILL after the grace."""
        ...

    async def mirror_log(self) -> None:
        """Copy its log into the launch's log file here as it grows, until cancelled."""
        ...

    async def copy_log(self) -> None:
        """Copy what is left of its log now (after it exited)."""
        ...

    async def adopt(self) -> bool:
        """Find it again after the control plane restarted: True while its vLLM runs."""
        ...

    async def release(self) -> None:
        """The launch ended: copy the rest of its log, then free what it held there."""
        ...


class Fence(Protocol):
    """For a launch across boxes: the GPUs of every box it does not hold, kept from Ray,
    so that vLLM's Ray executor can place its workers on the launch's boxes only."""

    async def hold(self) -> None:
        """Raises when it cannot stand."""
        ...

    async def release(self) -> None: ...


class ClusterView(Protocol):
    """The boxes a head may place launches on, besides itself."""

    head_node_id: str | None
    # The Ray address a launch across boxes (a Ray driver) joins: HEAD:PORT.
    address: str

    def fence_for(self, launch: Launch, gpus_per_node: int) -> Fence: ...

    async def other_boxes(self) -> list[Box]:
        """The alive boxes other than the head, with their GPUs."""
        ...

    def process_of(self, launch: Launch) -> RemoteProcess:
        """The handle on a launch's vLLM on its box (`launch.node_id`)."""
        ...
