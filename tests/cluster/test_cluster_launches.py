"""Launches on any box of the cluster, through the head's API: placed on the head or on a
worker (asked for, or where GPUs are free), served by /proxy and by /v1 and batches over
replicas on both boxes, stopped cleanly, and failed within seconds when their box dies."""

from __future__ import annotations

import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.batch_helpers import chat_line, client_for, jsonl, result_lines, submit, wait_for_batch
from tests.cluster.conftest import KEY, BoxFactory, BoxServer
from tests.cluster.test_cluster_nodes import ray_group
from tests.harness import EVICTION_GRACE_SECONDS, eventually
from tests.test_cli import cli
from vllm_bootstrap.supervision.processes import group_members

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
MODEL = "org/spread"


def alive_nodes(head: BoxServer) -> list[dict[str, Any]]:
    return [node for node in head.client.get("/nodes").json() if node["alive"]]


def joined(head: BoxServer, count: int) -> dict[str, str]:
    """Box address -> Ray node id, once `count` boxes are in."""
    eventually(lambda: len(alive_nodes(head)) == count, timeout=60, message="boxes never joined")
    return {node["address"]: node["node_id"] for node in alive_nodes(head)}


def launch(head: BoxServer, **body: Any) -> dict[str, Any]:
    response = head.client.post("/launch", json={"model": MODEL, **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def wait_ready(head: BoxServer, launch_id: str) -> dict[str, Any]:
    def ready() -> bool:
        state = head.client.get(f"/status/{launch_id}").json()["state"]
        log = head.client.get(f"/logs/{launch_id}").json()["content"][-3000:]
        assert state in ("bootstrapping", "ready"), f"{launch_id} is {state}; its log ends:\n{log}"
        return bool(state == "ready")

    eventually(ready, timeout=60, message=f"{launch_id} never became ready")
    return dict(head.client.get(f"/status/{launch_id}").json())


def log_reaches_the_head(head: BoxServer, launch_id: str, line: str) -> None:
    """A launch's log line, written on its box, shows in the head's copy (copied as it
    comes: a start-up line may follow readiness by a moment)."""
    eventually(
        lambda: line in head.client.get(f"/logs/{launch_id}").json()["content"],
        timeout=10,
        message=f"{line!r} never reached the head's log of {launch_id}",
    )


def served(head: BoxServer, launch_id: str) -> float:
    """How many requests the launch's vLLM answered (its own /metrics, through /proxy)."""
    text = head.client.get(f"/proxy/{launch_id}/metrics").text
    match = re.search(r"^vllm:request_success_total\{[^}]*\} (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


def chat(head: BoxServer, text: str) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 2}
    return head.client.post("/v1/chat/completions", json=body).status_code


def test_launches_run_on_every_box_and_v1_and_batches_spread_over_them(
    start_box: BoxFactory,
) -> None:
    slow = {"FAKE_GPU_COUNT": "1", "FAKE_VLLM_LATENCY_SECONDS": "0.2"}
    head, worker = start_box(0, **slow), start_box(1, **slow)
    nodes = joined(head, 2)
    here = launch(head)
    assert here["node_id"] is None  # the head takes what it can itself
    there = launch(head)  # its one GPU is taken: placed on the worker
    assert (there["node_id"], there["host"]) == (nodes[worker.box.address], worker.box.address)
    wait_ready(head, here["launch_id"])
    ready = wait_ready(head, there["launch_id"])
    assert ready["served_models"] == [MODEL]

    # Its vLLM runs on the worker's address and its log reaches the head.
    assert httpx.get(f"http://{worker.box.address}:{there['port']}/health").status_code == 200
    log_reaches_the_head(head, there["launch_id"], "Application startup complete.")
    owners = {
        (gpu["node_id"], gpu["index"]): gpu["launch_id"] for gpu in head.client.get("/gpus").json()
    }
    assert owners == {
        (nodes[head.box.address], 0): here["launch_id"],
        (nodes[worker.box.address], 0): there["launch_id"],
    }

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda n: chat(head, f"hello {n}"), range(16)))
    assert codes == [200] * 16
    assert (served(head, here["launch_id"]) > 0, served(head, there["launch_id"]) > 0) == (
        True,
        True,
    )

    before = {
        key: served(head, launch["launch_id"]) for key, launch in (("here", here), ("there", there))
    }
    client = client_for(head)
    lines = [chat_line(f"line-{n}", MODEL) for n in range(40)]
    batch = wait_for_batch(client, submit(client, jsonl(lines)).id, timeout=120)
    assert batch.status == "completed", batch
    results = result_lines(client, batch.output_file_id)
    assert sorted(line["custom_id"] for line in results) == sorted(f"line-{n}" for n in range(40))
    assert served(head, here["launch_id"]) > before["here"]
    assert served(head, there["launch_id"]) > before["there"]


def test_a_launch_asked_for_on_a_box_holds_that_boxs_gpus_until_it_stops(
    start_box: BoxFactory,
) -> None:
    head, worker = start_box(0, FAKE_GPU_COUNT="1"), start_box(1, FAKE_GPU_COUNT="2")
    nodes = joined(head, 2)
    worker_id = nodes[worker.box.address]
    # As a user asks for it from another machine: the command line, the box by its address.
    asked = cli(
        head, "launch", MODEL, "--node", worker.box.address, "--gpus", "1", "--json", key=KEY
    )
    there = json.loads(asked.stdout)
    assert (there["node_id"], there["gpu_ids"]) == (worker_id, [1])
    taken = head.client.post("/launch", json={"model": MODEL, "node": worker_id, "gpu_ids": [1]})
    assert taken.status_code == 409
    assert there["launch_id"] in taken.text
    unknown = head.client.post("/launch", json={"model": MODEL, "node": "10.9.9.9"})
    assert unknown.status_code == 400
    assert "GET /nodes" in unknown.text
    wait_ready(head, there["launch_id"])
    pid = head.client.get(f"/status/{there['launch_id']}").json()["pid"]
    # A profile loads on the head's GPU 0, though a launch holds GPU 0 of the worker.
    also_there = launch(head, node=worker_id, gpu_ids=[0])
    pinned = {"model": "org/profiled", "pinned": True}  # never evicted: the head stays full
    assert head.client.put("/models/p", json=pinned).status_code == 200
    body = {"model": "p", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert head.client.post("/v1/chat/completions", json=body).status_code == 200
    loaded = [one for one in head.client.get("/launch").json() if one["profile"] == "p"]
    assert [(one["node_id"], one["gpu_ids"]) for one in loaded] == [(None, [0])]
    # The head is full now: another profile takes the worker's free GPU before it would
    # evict anything on the head.
    head.client.post(f"/stop/{also_there['launch_id']}", params={"wait": "true"})
    assert head.client.put("/models/q", json={"model": "org/elsewhere"}).status_code == 200
    asked_q = {"model": "q", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert head.client.post("/v1/chat/completions", json=asked_q).status_code == 200
    loaded = [one for one in head.client.get("/launch").json() if one["profile"] == "q"]
    assert [(one["node_id"], one["gpu_ids"]) for one in loaded] == [(worker_id, [0])]
    # Nothing is free now, and the head cannot make room: an idle profile launch on the
    # worker is evicted for the next profile.
    assert head.client.put("/models/r", json={"model": "org/evicting"}).status_code == 200
    asked_r = {"model": "r", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert head.client.post("/v1/chat/completions", json=asked_r).status_code == 200
    evicted = head.client.get(f"/status/{loaded[0]['launch_id']}").json()
    assert evicted["state"] == "stopped"
    assert f"evicting launch {evicted['launch_id']}" in head.output()
    loaded = [one for one in head.client.get("/launch").json() if one["profile"] == "r"]
    assert [(one["node_id"], one["gpu_ids"]) for one in loaded] == [(worker_id, [0])]
    head.client.post(f"/stop/{loaded[0]['launch_id']}", params={"wait": "true"})

    stopped = head.client.post(f"/stop/{there['launch_id']}", params={"wait": "true"}).json()
    assert stopped["state"] == "stopped"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{worker.box.address}:{there['port']}/health", timeout=2)
    # vLLM and its EngineCore are gone from the worker, not only its leader.
    remaining = subprocess.run(
        ["ip", "netns", "pids", worker.box.namespace], capture_output=True, text=True, check=True
    ).stdout.split()
    assert str(pid) not in remaining
    again = launch(head, node=worker_id, gpu_ids=[1])  # its GPU is free again
    assert again["node_id"] == worker_id

    # A crash on the worker restarts there, on the same GPU; the error comes from its log.
    crashing = launch(
        head, model="org/crash-after-ready", node=worker_id, gpu_ids=[0], restart="on-failure"
    )
    crashing_id = crashing["launch_id"]
    eventually(
        lambda: head.client.get(f"/status/{crashing_id}").json()["restart_count"] >= 1,
        timeout=60,
        message="the crashed launch never restarted",
    )
    restarted = head.client.get(f"/status/{crashing_id}").json()
    assert (restarted["node_id"], restarted["gpu_ids"]) == (worker_id, [0])
    assert "CUDA out of memory" in restarted["last_error"]
    head.client.post(f"/stop/{crashing_id}", params={"wait": "true"})


def test_a_sleeping_profile_on_a_worker_falls_asleep_and_wakes_there(
    start_box: BoxFactory,
) -> None:
    head, worker = start_box(0, FAKE_GPU_COUNT="1"), start_box(1, FAKE_GPU_COUNT="1")
    worker_id = joined(head, 2)[worker.box.address]
    pinned = {"model": "org/head-pinned", "pinned": True}  # the head stays full
    assert head.client.put("/models/pinned", json=pinned).status_code == 200
    sleeper = {"model": "org/sleeper", "sleep": True}
    assert head.client.put("/models/sleeper", json=sleeper).status_code == 200
    assert head.client.put("/models/other", json={"model": "org/other"}).status_code == 200

    def ask(name: str) -> int:
        body = {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        return head.client.post("/v1/chat/completions", json=body, timeout=60).status_code

    assert (ask("pinned"), ask("sleeper")) == (200, 200)
    [before] = [one for one in head.client.get("/launch").json() if one["profile"] == "sleeper"]
    assert (before["node_id"], before["gpu_ids"]) == (worker_id, [0])
    time.sleep(float(EVICTION_GRACE_SECONDS) + 0.1)  # a launch used just now is kept
    assert ask("other") == 200  # the worker's GPU: the sleeper falls asleep there
    asleep = head.client.get(f"/status/{before['launch_id']}").json()
    assert (asleep["state"], asleep["pid"]) == ("sleeping", before["pid"])
    vllm = f"http://{worker.box.address}:{before['port']}"
    assert httpx.get(f"{vllm}/is_sleeping").json() == {"is_sleeping": True}
    time.sleep(float(EVICTION_GRACE_SECONDS) + 0.1)
    assert ask("sleeper") == 200  # "other" gives the GPU back, the sleeper wakes there
    awake = head.client.get(f"/status/{before['launch_id']}").json()
    assert (awake["state"], awake["pid"], awake["node_id"]) == ("ready", before["pid"], worker_id)
    stats = head.client.get(f"/proxy/{before['launch_id']}/debug/stats").json()
    assert (stats["sleeps"], stats["wakes"]) == (1, 1)
    head.client.post(f"/stop/{before['launch_id']}", params={"wait": "true"})


def test_a_box_that_dies_fails_its_launches_within_seconds(start_box: BoxFactory) -> None:
    head, worker = start_box(0, FAKE_GPU_COUNT="1"), start_box(1, FAKE_GPU_COUNT="1")
    nodes = joined(head, 2)
    there = launch(head, node=nodes[worker.box.address], restart="on-failure")
    wait_ready(head, there["launch_id"])

    # The whole box goes, as a rented box that is taken away: every process in it, at once.
    pids = subprocess.run(
        ["ip", "netns", "pids", worker.box.namespace], capture_output=True, text=True, check=True
    ).stdout.split()
    subprocess.run(["kill", "-9", *pids], check=False)
    died = time.monotonic()
    eventually(
        lambda: head.client.get(f"/status/{there['launch_id']}").json()["state"] == "failed",
        timeout=60,
        message="the launch on the dead box never failed",
    )
    took = time.monotonic() - died
    print(f"a launch on a dead box failed {took:.1f} s after the box died")
    failed = head.client.get(f"/status/{there['launch_id']}").json()
    assert "could no longer be reached" in failed["error"]
    assert failed["restart_count"] == 0  # its box is gone: no restart there
    assert chat(head, "anyone?") in (404, 503)


def test_a_head_killed_and_started_again_takes_over_its_ray_node_and_a_launch_on_a_worker(
    start_box: BoxFactory,
) -> None:
    head, worker = start_box(0, FAKE_GPU_COUNT="1"), start_box(1, FAKE_GPU_COUNT="1")
    nodes = joined(head, 2)
    there = launch(head, node=nodes[worker.box.address])
    pid = wait_ready(head, there["launch_id"])["pid"]
    ray_head = ray_group(head.output())
    head.kill()  # SIGKILL: its Ray node (a session of its own) runs on, and the cluster
    again = start_box(0, FAKE_GPU_COUNT="1")  # the same box: its state folder
    assert "took over the one a previous run left" in again.output()
    assert group_members(ray_head)
    assert [node["head"] for node in alive_nodes(again)].count(False) == 1  # the worker stayed

    adopted = again.client.get(f"/status/{there['launch_id']}").json()
    assert (adopted["state"], adopted["adopted"], adopted["pid"]) == ("ready", True, pid)
    assert chat(again, "still there?") == 200
    stopped = again.client.post(f"/stop/{there['launch_id']}", params={"wait": "true"}).json()
    assert stopped["state"] == "stopped"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{worker.box.address}:{there['port']}/health", timeout=2)


def test_a_box_killed_mid_batch_leaves_every_line_with_exactly_one_result(
    start_box: BoxFactory,
) -> None:
    slow = {"FAKE_GPU_COUNT": "1", "FAKE_VLLM_LATENCY_SECONDS": "0.2"}
    # Four lines at a time per replica: 150 lines take seconds, so the kill lands mid-batch.
    head = start_box(0, VLLM_BATCH_IN_FLIGHT_PER_LAUNCH="4", **slow)
    worker = start_box(1, **slow)
    nodes = joined(head, 2)
    here, there = launch(head), launch(head, node=nodes[worker.box.address])
    wait_ready(head, here["launch_id"])
    wait_ready(head, there["launch_id"])
    client = client_for(head)
    count = 150
    batch = submit(client, jsonl([chat_line(f"line-{n}", MODEL) for n in range(count)]))

    def under_way() -> bool:
        done = client.batches.retrieve(batch.id).request_counts
        return done is not None and done.completed >= 10

    eventually(under_way, timeout=60, message="the batch never got going")
    assert served(head, there["launch_id"]) > 0  # the worker's replica took lines
    pids = subprocess.run(
        ["ip", "netns", "pids", worker.box.namespace], capture_output=True, text=True, check=True
    ).stdout.split()
    subprocess.run(["kill", "-9", *pids], check=False)
    at_the_kill = client.batches.retrieve(batch.id).request_counts
    assert at_the_kill is not None
    assert at_the_kill.completed < count  # mid-batch

    finished = wait_for_batch(client, batch.id, timeout=180)
    assert finished.status == "completed", finished
    results = result_lines(client, finished.output_file_id)
    assert sorted(line["custom_id"] for line in results) == sorted(
        f"line-{n}" for n in range(count)
    )
    assert {line["response"]["status_code"] for line in results} == {200}
    assert result_lines(client, finished.error_file_id) == []
    eventually(
        lambda: head.client.get(f"/status/{there['launch_id']}").json()["state"] == "failed",
        timeout=30,
        message="the launch on the dead box never failed",
    )


def test_a_launch_across_two_boxes_holds_both_and_its_ray_workers_stay_on_them(
    start_box: BoxFactory,
) -> None:
    two = {"FAKE_GPU_COUNT": "2"}
    head, one, other = start_box(0, **two), start_box(1, **two), start_box(2, **two)
    nodes = joined(head, 3)
    head_id, one_id, other_id = (nodes[box.box.address] for box in (head, one, other))
    blocker = launch(head, node=one_id, gpu_ids=[0])  # box one is not whole now

    across = launch(head, nodes=2, gpus_per_node=2)
    assert (across["node_id"], across["other_node_gpus"]) == (None, {other_id: [0, 1]})
    assert across["command"][-6:] == [
        *("--tensor-parallel-size", "2", "--pipeline-parallel-size", "2"),
        *("--distributed-executor-backend", "ray"),
    ]
    wait_ready(head, across["launch_id"])
    # vLLM's Ray workers went to its two boxes, though box one had free GPUs too.
    stats = head.client.get(f"/proxy/{across['launch_id']}/debug/stats").json()
    assert sorted(stats["ray_nodes"]) == sorted([head_id, head_id, other_id, other_id])
    owners = {
        (gpu["node_id"], gpu["index"]): gpu["launch_id"] for gpu in head.client.get("/gpus").json()
    }
    assert [owners[(node, gpu)] for node in (head_id, other_id) for gpu in (0, 1)] == [
        across["launch_id"]
    ] * 4
    refused = head.client.post("/launch", json={"model": MODEL, "nodes": 2, "gpus_per_node": 2})
    assert refused.status_code == 409
    assert "in use by" in refused.text

    stopped = head.client.post(f"/stop/{across['launch_id']}", params={"wait": "true"}).json()
    assert stopped["state"] == "stopped"
    head.client.post(f"/stop/{blocker['launch_id']}", params={"wait": "true"})
    held = launch(head, gpu_ids=[0])  # the head is not whole now: the next one runs on the others
    again = launch(head, nodes=2, gpus_per_node=2)
    # Its vLLM runs on one worker box (through its actor), its workers on both.
    boxes = {again["node_id"], *again["other_node_gpus"]}
    assert boxes == {one_id, other_id}
    assert list(again["other_node_gpus"].values()) == [[0, 1]]
    wait_ready(head, again["launch_id"])
    stats = head.client.get(f"/proxy/{again['launch_id']}/debug/stats").json()
    assert sorted(stats["ray_nodes"]) == sorted([one_id, one_id, other_id, other_id])
    assert chat(head, "across") == 200
    assert held["node_id"] is None
