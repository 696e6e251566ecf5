"""Which box a launch goes to on a cluster's head, and the refusal when none can take it.

A launch names its box (`LaunchSpec.node`: a node id, or the address GET /nodes lists), or
goes to this box first and, when it may go anywhere, to the cluster's other boxes in turn.
Admission (admission.py) then decides on each box's GPUs; the refusal of every box tried is
told as one.
"""

from __future__ import annotations

from vllm_bootstrap.supervision.errors import InvalidLaunch, LaunchRefused
from vllm_bootstrap.supervision.remote import Box, ClusterView


async def boxes_for(
    cluster: ClusterView | None, node: str | None, anywhere: bool
) -> list[Box | None]:
    """Where a launch may go, in the order tried (None: this box): the node asked for,
    else this box first, then (`anywhere`) the cluster's other boxes."""
    if cluster is None:
        if node is not None:
            raise InvalidLaunch(
                f"node {node!r}: this server runs alone, not as the head of a cluster "
                "(VLLM_BOOTSTRAP_RAY_HEAD); leave `node` out"
            )
        return [None]
    head = (cluster.head_node_id, head_address(cluster))
    if (node is None and not anywhere) or (node is not None and node in head):
        return [None]
    others = await cluster.other_boxes()
    if node is None:  # a box without GPUs only when asked for by name
        return [None, *(box for box in others if not box.cpu_only)]
    chosen = [box for box in others if node in (box.node_id, box.address)]
    if not chosen:
        raise InvalidLaunch(
            f"node {node!r} is no alive node of this cluster: name one that GET /nodes "
            "lists (its node_id or address), or leave `node` out"
        )
    return chosen[:1]


def head_address(cluster: ClusterView) -> str:
    """The head's address on the cluster's private network (its Ray address less the port)."""
    return cluster.address.rsplit(":", 1)[0]


def refused(refusals: list[tuple[Box | None, LaunchRefused]]) -> LaunchRefused:
    """The one refusal, or this box's with each other box's reason after it."""
    (_, first), *others = refusals
    if not others:
        return first
    elsewhere = "; ".join(
        f"on node {box.node_id[:12]} ({box.address}): {exc.message}"
        for box, exc in others
        if box is not None
    )
    return type(first)(
        f"{first.message}. Nor could any other box of the cluster take it: {elsewhere}"
    )
