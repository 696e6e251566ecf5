"""Where a launch across boxes goes: plain functions over what the head knows of each box.

Such a launch runs one vLLM with its Ray executor: tensor parallel over `gpus_per_node`
GPUs within each box, pipeline parallel over `nodes` boxes (vLLM's multi-node guide). vLLM,
through Ray, picks the GPUs within a box itself, so the launch takes each of its boxes
whole: a box qualifies when it has at least `gpus_per_node` GPUs and no launch holds any of
them. The head comes first, then the other boxes in Ray's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vllm_bootstrap.launches import reserved_flag
from vllm_bootstrap.supervision.errors import InvalidLaunch, ResourceConflict
from vllm_bootstrap.supervision.remote import Box

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
