"""Admission decides from a snapshot alone: GPUs, foreign GPU users, ports."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from vllm_bootstrap.supervision.admission import (
    Decision,
    GPUUser,
    Request,
    Snapshot,
    admit,
)
from vllm_bootstrap.supervision.errors import InvalidLaunch, ResourceConflict, Unavailable


def first_free(taken: Collection[int]) -> int:
    return next(port for port in range(8001, 8100) if port not in taken)


def decide(
    request: Request, snapshot: Snapshot, busy_ports: frozenset[int] = frozenset()
) -> Decision:
    return admit(request, snapshot, first_free, lambda port: port not in busy_ports)


def user(gpu: int, group: int | None) -> GPUUser:
    return GPUUser(
        gpu_index=gpu, pid=4242, process_group=group, name="python3", used_memory_mib=70000
    )


def test_every_detected_gpu_and_the_first_free_port_by_default() -> None:
    snapshot = Snapshot(detected_gpus=[0, 1], port_owners={8001: "abc"})
    assert decide(Request(None, None, False), snapshot) == Decision([0, 1], 8002)


def test_no_detected_gpu_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="nvidia-smi lists none"):
        decide(Request(None, None, False), Snapshot(detected_gpus=[]))


def test_unknown_gpus_are_invalid() -> None:
    with pytest.raises(InvalidLaunch, match=r"gpu_ids \[5\] are not detected GPUs"):
        decide(Request([0, 5], None, False), Snapshot(detected_gpus=[0, 1]))


def test_an_owned_gpu_is_a_conflict_naming_its_owner() -> None:
    snapshot = Snapshot(detected_gpus=[0, 1], gpu_owners={1: "abc (ready)"})
    with pytest.raises(ResourceConflict, match=r"GPU 1 by launch abc \(ready\)"):
        decide(Request([1], None, False), snapshot)
    assert decide(Request([0], None, False), snapshot).gpu_ids == [0]


def test_a_foreign_process_on_a_requested_gpu_is_a_conflict_unless_forced() -> None:
    snapshot = Snapshot(detected_gpus=[0, 1], gpu_users=[user(1, group=999)])
    with pytest.raises(ResourceConflict, match=r"GPU 1 by pid 4242 \(python3, 70000 MiB\)"):
        decide(Request([1], None, False), snapshot)
    assert decide(Request([1], None, True), snapshot).gpu_ids == [1]
    assert decide(Request([0], None, False), snapshot).gpu_ids == [0]


def test_our_own_launches_processes_are_not_foreign() -> None:
    snapshot = Snapshot(
        detected_gpus=[0], gpu_users=[user(0, group=777)], our_process_groups=frozenset({777})
    )
    assert decide(Request([0], None, False), snapshot).gpu_ids == [0]


def test_a_requested_port_must_be_in_the_launch_range() -> None:
    snapshot = Snapshot(detected_gpus=[0], launch_ports=range(8001, 8100))
    for port in (22, 8000, 8100):
        with pytest.raises(InvalidLaunch, match=f"port {port} is outside .* \\(8001-8099\\)"):
            decide(Request([0], port, False), snapshot)
    assert decide(Request([0], 8099, False), snapshot).port == 8099


def test_a_requested_port_must_be_unowned_and_free() -> None:
    snapshot = Snapshot(detected_gpus=[0], port_owners={8005: "abc"})
    with pytest.raises(ResourceConflict, match="port 8005 is used by launch abc"):
        decide(Request([0], 8005, False), snapshot)
    with pytest.raises(InvalidLaunch, match="port 8006 is busy"):
        decide(Request([0], 8006, False), snapshot, busy_ports=frozenset({8006}))
    assert decide(Request([0], 8007, False), snapshot).port == 8007
