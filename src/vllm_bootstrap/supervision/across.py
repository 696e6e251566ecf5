"""Where a launch across boxes goes: plain functions over what the head knows of each box.

Such a launch runs one vLLM with its Ray executor: tensor parallel over `gpus_per_node`
GPUs within each box, pipeline parallel over `nodes` boxes (vLLM's multi-node guide). vLLM,
through Ray, picks the GPUs within a box itself, so the launch takes each of its boxes
whole: a box qualifies when it has at least `gpus_per_node` GPUs and no launch holds any of
them. The head comes first, then the other boxes in Ray's order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vllm_bootstrap.launches import Launch, LaunchSpec, flag_value, reserved_flag
from vllm_bootstrap.supervision.errors import InvalidLaunch, ResourceConflict
from vllm_bootstrap.supervision.placement import head_address
from vllm_bootstrap.supervision.remote import Box, ClusterView, Fence

# What vLLM is told for a launch across boxes; the caller must not say otherwise (in any
# spelling vLLM's parser takes: `reserved_flag`), nor ask for more workers.
LAYOUT_FLAGS = (
    "--tensor-parallel-size",
    "--pipeline-parallel-size",
    "--data-parallel-size",
    "--data-parallel-size-local",
    "--distributed-executor-backend",
)
SHORT_LAYOUT_FLAGS = ("-tp", "-pp", "-dp", "-dpl")


@dataclass(frozen=True)
class Candidate:
    """A box as placement sees it: None for the head itself."""

    box: Box | None
    gpus: list[int]
    # GPU index -> the launch holding it ("abc123 (ready)").
    owners: dict[int, str]

    @property
    def name(self) -> str:
        return (
            "the head" if self.box is None else f"node {self.box.node_id[:12]} ({self.box.address})"
        )


def candidates(
    head_gpus: list[int], others: Sequence[Box], owners: Callable[[str | None], dict[int, str]]
) -> list[Candidate]:
    """The head, then each other box that has GPUs, with who holds them (`owners`: node id,
    None for the head, -> GPU index -> its launch)."""
    head = Candidate(None, head_gpus, owners(None))
    others_with_gpus = (box for box in others if not box.cpu_only)
    return [head, *(Candidate(box, box.gpus, owners(box.node_id)) for box in others_with_gpus)]


def choose_boxes(
    candidates: Sequence[Candidate], nodes: int, gpus_per_node: int
) -> list[Candidate]:
    """The first `nodes` boxes that each have `gpus_per_node` GPUs and none of them taken;
    ResourceConflict, saying what each box lacks, when there are not enough."""
    chosen, refused = [], []
    for candidate in candidates:
        why = _unfit(candidate, gpus_per_node)
        if why is None:
            chosen.append(candidate)
        else:
            refused.append(f"{candidate.name}: {why}")
        if len(chosen) == nodes:
            return chosen
    raise ResourceConflict(
        f"a launch across {nodes} boxes with {gpus_per_node} GPUs each takes each box whole, "
        f"and only {len(chosen)} box(es) of the cluster qualify now"
        + (f"; {'; '.join(refused)}" if refused else "")
    )


def layout_args(nodes: int, gpus_per_node: int) -> list[str]:
    """vLLM's flags for it: tensor parallel within a box, pipeline parallel across boxes,
    on the Ray executor."""
    return [
        "--tensor-parallel-size",
        str(gpus_per_node),
        "--pipeline-parallel-size",
        str(nodes),
        "--distributed-executor-backend",
        "ray",
    ]


def driver_spec(spec: LaunchSpec, first: Candidate, cluster: ClusterView) -> LaunchSpec:
    """The launch as its first box runs it: vLLM's layout flags, and what its Ray executor
    needs to join the cluster from that box (vLLM's multi-node guide sets VLLM_HOST_IP to
    each box's private address)."""
    host_ip = first.box.address if first.box is not None else head_address(cluster)
    return dataclasses.replace(
        spec,
        extra_args=[*spec.extra_args, *layout_args(spec.nodes, spec.gpus_per_node or 0)],
        env={**spec.env, "RAY_ADDRESS": cluster.address, "VLLM_HOST_IP": host_ip},
    )


def fences(cluster: ClusterView, launch: Launch) -> Callable[[], Fence]:
    """A new fence for each start of a launch across boxes."""
    gpus_per_node = int(flag_value(launch.extra_args, "--tensor-parallel-size") or 1)
    return lambda: cluster.fence_for(launch, gpus_per_node)


def check_layout_args(extra_args: Sequence[str]) -> None:
    for arg in extra_args:
        short = arg.split("=", 1)[0] in SHORT_LAYOUT_FLAGS
        if short or reserved_flag(arg, LAYOUT_FLAGS) is not None:
            raise InvalidLaunch(
                f"extra_args must not set {arg.split('=', 1)[0]} for a launch across boxes: "
                "`nodes` and `gpus_per_node` set vLLM's layout"
            )


def _unfit(candidate: Candidate, gpus_per_node: int) -> str | None:
    if len(candidate.gpus) < gpus_per_node:
        return f"{len(candidate.gpus)} GPU(s)"
    taken = sorted({owner for gpu, owner in candidate.owners.items() if gpu in candidate.gpus})
    if taken:
        return f"in use by {', '.join(taken)}"
    return None
