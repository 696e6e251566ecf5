"""Whether a launch may start, and on which GPUs and port: plain functions over a snapshot.

The supervisor gathers the facts (what nvidia-smi lists, who owns what) into a `Snapshot`;
`admit` decides from them alone, or raises a domain error that says what to fix. Nothing
here awaits, so the decision and the claim that follows it happen without a gap in which
another request could take the same GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from vllm_bootstrap.supervision.errors import InvalidLaunch, ResourceConflict, Unavailable


@dataclass(frozen=True)
class GPUUser:
    """A process holding memory on one of the GPUs, with what /proc says about it."""

    gpu_index: int
    pid: int
    process_group: int | None
    name: str
    used_memory_mib: int | None


@dataclass(frozen=True)
class Snapshot:
    detected_gpus: list[int]
    # GPU index or port -> a description of the launch that owns it ("abc123 (ready)").
    gpu_owners: dict[int, str] = field(default_factory=dict)
    port_owners: dict[int, str] = field(default_factory=dict)
    our_process_groups: frozenset[int] = frozenset()
    gpu_users: list[GPUUser] = field(default_factory=list)
    # No nvidia-smi on this box: launches run on the CPU (vLLM's CPU build), owning no GPU.
    cpu_only: bool = False
    # VLLM_LAUNCH_PORT_START..END: the only ports a launch may have.
    launch_ports: range = range(1024, 65536)


@dataclass(frozen=True)
class Request:
    gpu_ids: list[int] | None
    port: int | None
    force: bool


@dataclass(frozen=True)
class Decision:
    gpu_ids: list[int]
    port: int


def admit(
    request: Request,
    snapshot: Snapshot,
    next_free_port: Callable[[Collection[int]], int],
    port_is_free: Callable[[int], bool],
) -> Decision:
    """`next_free_port(taken)` picks a port (or raises Unavailable); `port_is_free(port)`
    says whether nothing listens on a requested one."""
    gpu_ids = choose_gpus(request.gpu_ids, snapshot.detected_gpus, snapshot.cpu_only)
    if not request.force:
        check_no_foreign_users(gpu_ids, snapshot)
    check_gpus_free(gpu_ids, snapshot.gpu_owners)
    if request.port is None:
        return Decision(gpu_ids, next_free_port(snapshot.port_owners.keys()))
    check_port(request.port, snapshot, port_is_free)
    return Decision(gpu_ids, request.port)


def choose_gpus(requested: list[int] | None, detected: list[int], cpu_only: bool) -> list[int]:
    """The launch's GPUs: those requested, or all detected; none on a CPU-only box."""
    if cpu_only:
        if requested:
            raise InvalidLaunch(
                f"gpu_ids {requested}: this box has no nvidia-smi, so no GPUs; leave gpu_ids "
                "out (or pass []) to launch on the CPU"
            )
        return []
    if requested == []:
        raise InvalidLaunch(
            "gpu_ids []: a launch without GPUs runs on the CPU, which only a box without "
            "nvidia-smi does; name GPUs, or leave gpu_ids out for all of them"
        )
    if requested is None:
        if not detected:
            raise Unavailable("no GPUs are available: nvidia-smi lists none" + _visible_note())
        return list(detected)
    unknown = sorted(set(requested) - set(detected))
    if unknown:
        raise InvalidLaunch(
            f"gpu_ids {unknown} are not detected GPUs; detected: {detected}" + _visible_note()
        )
    return sorted(requested)


def check_no_foreign_users(gpu_ids: list[int], snapshot: Snapshot) -> None:
    """Refuse GPUs on which a process that is not one of our launches holds memory.

    The usual culprit is a vLLM left behind by a previous container: launching next to it
    would fail later with a confusing out-of-memory error.
    """
    foreign = [
        user
        for user in snapshot.gpu_users
        if user.gpu_index in gpu_ids and user.process_group not in snapshot.our_process_groups
    ]
    if foreign:
        described = "; ".join(
            f"GPU {user.gpu_index} by pid {user.pid} ({user.name}, {user.used_memory_mib} MiB)"
            for user in foreign
        )
        raise ResourceConflict(
            f"GPUs in use by processes that are not our launches: {described}. Stop them (a "
            'vLLM left behind by an earlier container?), or pass "force": true to launch '
            "anyway"
        )


def check_gpus_free(gpu_ids: list[int], owners: dict[int, str]) -> None:
    taken = [f"GPU {gpu} by launch {owners[gpu]}" for gpu in gpu_ids if gpu in owners]
    if taken:
        raise ResourceConflict(f"GPUs already owned: {', '.join(taken)}; stop it first")


def check_port(port: int, snapshot: Snapshot, port_is_free: Callable[[int], bool]) -> None:
    ports = snapshot.launch_ports
    if port not in ports:
        raise InvalidLaunch(
            f"port {port} is outside VLLM_LAUNCH_PORT_START..VLLM_LAUNCH_PORT_END "
            f"({ports.start}-{ports.stop - 1}): choose one inside it or leave `port` out"
        )
    if port in snapshot.port_owners:
        raise ResourceConflict(f"port {port} is used by launch {snapshot.port_owners[port]}")
    if not port_is_free(port):
        raise InvalidLaunch(
            f"port {port} is busy: another process listens there; choose another port or "
            "leave `port` out"
        )


def _visible_note() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f" (the server's CUDA_VISIBLE_DEVICES={visible!r} limits them)" if visible else ""
