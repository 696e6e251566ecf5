"""A launch across boxes: which boxes it takes (whole ones, the head first), and the
requests refused before any box is asked (in-process where no server is the point)."""

from __future__ import annotations

import pytest

from tests.harness import Server
from vllm_bootstrap.supervision.across import Candidate, check_layout_args, choose_boxes
from vllm_bootstrap.supervision.errors import InvalidLaunch, ResourceConflict
from vllm_bootstrap.supervision.remote import Box


def a_box(name: str, gpus: int, owners: dict[int, str] | None = None) -> Candidate:
    return Candidate(
        Box(name, f"10.0.0.{len(name)}", list(range(gpus))), list(range(gpus)), owners or {}
    )


def test_whole_free_boxes_are_taken_in_order_the_head_first() -> None:
    head = Candidate(None, [0, 1], {})
    busy = a_box("busy", 2, {1: "abc (ready)"})
    small = a_box("s", 1)
    chosen = choose_boxes([head, busy, small, a_box("free", 4), a_box("later", 2)], 2, 2)
    assert [candidate.box.node_id if candidate.box else None for candidate in chosen] == [
        None,
        "free",
    ]


def test_too_few_whole_boxes_say_what_each_lacks() -> None:
    with pytest.raises(ResourceConflict) as refused:
        choose_boxes([Candidate(None, [0], {0: "abc (ready)"}), a_box("small", 1)], 2, 1)
    message = refused.value.message
    assert "only 1 box(es)" in message
    assert "the head: in use by abc (ready)" in message


def test_layout_flags_are_the_launchs_own() -> None:
    check_layout_args(["--max-model-len", "4096"])
    spellings = (
        "--pipeline-parallel-size=4",
        "-tp",
        "--distributed-executor-backend",
        "--data_parallel_size",  # argparse reads underscores and prefixes too
        "--pipeline-parallel",
        "-dpl",
    )
    for flag in spellings:
        with pytest.raises(InvalidLaunch, match="`nodes` and `gpus_per_node` set"):
            check_layout_args([flag, "2"])


REFUSED_ON_A_BOX_ALONE = [
    ({"nodes": 2, "gpus_per_node": 1}, 400, "not as the head of a cluster"),
    ({"gpus_per_node": 2}, 422, "gpus_per_node goes with nodes"),
    ({"nodes": 2}, 422, "nodes needs gpus_per_node"),
    ({"nodes": 2, "gpus_per_node": 1, "gpu_ids": [0]}, 422, "leave gpu_ids and node out"),
    ({"nodes": 1, "gpus_per_node": 1}, 422, "greater than or equal to 2"),
    ({"node": "10.0.0.2"}, 400, "runs alone"),
    ({"nodes": 2, "gpus_per_node": 1, "port": 9000}, 422, "leave port out"),
    ({"env": {"BOOTSTRAP_BOX": "/elsewhere"}}, 422, "BOOTSTRAP_* names are vllm-bootstrap's"),
]


def test_a_box_alone_refuses_what_only_a_cluster_can_do(server: Server) -> None:
    for body, status, says in REFUSED_ON_A_BOX_ALONE:
        response = server.client.post("/launch", json={"model": "m", **body})
        assert response.status_code == status, (body, response.text)
        assert says in response.text
    assert server.client.get("/launch").json() == []
