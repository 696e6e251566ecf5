"""Never lose a launch: a control plane killed and started again takes its launches back."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.harness import Server, eventually, helper_pids, pid_alive


def edit_launch(tmp_path: Path, launch_id: str, **columns: object) -> None:
    """Change a launch's stored record, as a crash at an awkward moment would leave it."""
    db = sqlite3.connect(tmp_path / "state" / "state.sqlite3")
    try:
        paths = ", ".join(f"'$.{name}', ?" for name in columns)
        db.execute(
            f"UPDATE launches SET record = json_set(record, {paths}) WHERE launch_id = ?",
            (*columns.values(), launch_id),
        )
        db.commit()
    finally:
        db.close()


def test_ready_launch_is_readopted_and_keeps_serving(start_server: ServerFactory) -> None:
    first = start_server()
    launch = first.launch_ready(model="m", gpu_ids=[0])
    first.kill()  # SIGKILL: no chance to stop anything
    second = start_server()

    adopted = second.status(launch["launch_id"])
    assert adopted["state"] == "ready"
    assert adopted["adopted"] is True
    assert adopted["pid"] == launch["pid"]
    proxied = second.client.post(
        f"/proxy/{launch['launch_id']}/v1/completions", json={"model": "m", "max_tokens": 2}
    )
    assert proxied.json()["choices"][0]["text"] == " tok0 tok1"
    assert second.client.post("/v1/completions", json={"model": "m"}).status_code == 200
    assert "Application startup complete." in second.logs(launch["launch_id"])
    # Its GPU is still its own: no double booking.
    assert second.client.post("/launch", json={"model": "x", "gpu_ids": [0]}).status_code == 409

    helpers = helper_pids(second.logs(launch["launch_id"]))
    assert second.stop(launch["launch_id"])["state"] == "stopped"
    assert not any(pid_alive(pid) for pid in [launch["pid"], *helpers])


def test_bootstrapping_launch_is_readopted_and_becomes_ready(
    start_server: ServerFactory,
) -> None:
    # Long enough that the second server is up before it loaded, on a busy machine too.
    first = start_server(FAKE_VLLM_LOAD_SECONDS="8")
    launch = first.launch(model="m", gpu_ids=[1])
    first.kill()
    second = start_server(FAKE_VLLM_LOAD_SECONDS="8")
    assert second.status(launch["launch_id"])["state"] == "bootstrapping"
    ready = second.wait_for(launch["launch_id"], {"ready"})
    assert ready["adopted"] is True
    assert ready["served_models"] == ["m"]


def test_launch_that_died_meanwhile_fails_and_frees_its_gpu(
    start_server: ServerFactory,
) -> None:
    first = start_server()
    launch = first.launch_ready(model="m", gpu_ids=[0])
    helpers = helper_pids(first.logs(launch["launch_id"]))
    first.kill()
    os.kill(launch["pid"], signal.SIGKILL)  # the API server dies; its EngineCore lingers
    eventually(lambda: not pid_alive(launch["pid"]))
    second = start_server()
    failed = second.status(launch["launch_id"])
    assert failed["state"] == "failed"
    assert "control plane restarted while the launch was ready" in failed["error"]
    assert not any(pid_alive(pid) for pid in helpers)  # remnants were ended
    assert second.launch(model="m", gpu_ids=[0])["gpu_ids"] == [0]


def test_a_reused_pid_is_not_adopted(start_server: ServerFactory, tmp_path: Path) -> None:
    first = start_server()
    launch = first.launch_ready(model="m", gpu_ids=[0])
    first.kill()
    os.killpg(launch["pid"], signal.SIGKILL)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        # As if the kernel had given the launch's old pid to an unrelated process.
        edit_launch(tmp_path, launch["launch_id"], pid=stranger.pid)
        second = start_server()
        assert second.status(launch["launch_id"])["state"] == "failed"
        assert pid_alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()


def test_a_launch_whose_pid_was_never_recorded_is_found(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    first = start_server()
    launch = first.launch_ready(model="m", gpu_ids=[0])
    first.kill()
    # As if the control plane had died between starting vLLM and writing its pid down.
    edit_launch(tmp_path, launch["launch_id"], pid=None, process_start_ticks=None)
    second = start_server()
    found = second.status(launch["launch_id"])
    assert (found["state"], found["pid"], found["adopted"]) == ("ready", launch["pid"], True)


def test_exit_of_an_adopted_launch_is_noticed(start_server: ServerFactory) -> None:
    first = start_server()
    launch = first.launch_ready(model="m", gpu_ids=[0])
    first.kill()
    second = start_server()
    helpers = helper_pids(second.logs(launch["launch_id"]))
    os.kill(launch["pid"], signal.SIGKILL)
    failed = second.wait_for(launch["launch_id"], {"failed"})
    assert "after it was ready" in failed["error"]
    eventually(lambda: not any(pid_alive(pid) for pid in helpers), message="remnants left")
    assert second.launch(model="m", gpu_ids=[0])["gpu_ids"] == [0]


def test_detach_on_exit_leaves_launches_for_the_next_start(
    start_server: ServerFactory,
) -> None:
    first = start_server(VLLM_BOOTSTRAP_DETACH_ON_EXIT="1")
    launch = first.launch_ready(model="m", gpu_ids=[0])
    first.terminate()
    assert "re-adopt" in first.output()
    assert pid_alive(launch["pid"])
    second = start_server()
    assert second.status(launch["launch_id"])["state"] == "ready"
    second.terminate()  # without the setting, a graceful exit stops launches
    assert not pid_alive(launch["pid"])


@pytest.mark.parametrize("moment", ["bootstrapping", "ready"])
def test_repeated_kills_never_double_book(start_server: ServerFactory, moment: str) -> None:
    server = start_server(FAKE_VLLM_LOAD_SECONDS="1")
    launches = [server.launch(model=f"m{gpu}", gpu_ids=[gpu]) for gpu in (0, 1)]
    for _ in range(3):
        if moment == "ready":
            for launch in launches:
                server.wait_for(launch["launch_id"], {"ready"})
        server.kill()
        server = start_server(FAKE_VLLM_LOAD_SECONDS="1")
        listed = {item["launch_id"]: item for item in server.client.get("/launch").json()}
        assert set(listed) == {launch["launch_id"] for launch in launches}
        owners = {gpu["index"]: gpu["launch_id"] for gpu in server.client.get("/gpus").json()}
        assert owners == {0: launches[0]["launch_id"], 1: launches[1]["launch_id"]}
    for launch in launches:
        assert server.wait_for(launch["launch_id"], {"ready"})["pid"] == launch["pid"]


def test_crashes_restart_with_backoff_until_the_limit(server: Server) -> None:
    launch = server.launch(
        model="m-crash-after-ready",
        gpu_ids=[0],
        restart="on-failure",
        max_restarts=2,
        restart_backoff_seconds=0.3,
        env={"FAKE_VLLM_CRASH_AFTER_SECONDS": "0.3"},
    )
    pids = {launch["pid"]}
    deadline = time.monotonic() + 30
    while (status := server.status(launch["launch_id"]))["state"] != "failed":
        assert time.monotonic() < deadline, status
        assert status["gpu_ids"] == [0]
        if status["pid"]:
            pids.add(status["pid"])
        time.sleep(0.05)
    assert status["restart_count"] == 2
    assert len(pids) == 3  # the first start and two restarts, under one launch id
    assert "torch.OutOfMemoryError" in status["last_error"]
    assert "torch.OutOfMemoryError" in status["error"]
    assert server.launch(model="m", gpu_ids=[0])["gpu_ids"] == [0]


def test_a_stop_during_the_backoff_ends_the_launch(server: Server) -> None:
    launch = server.launch(
        model="m-crash-on-start",
        gpu_ids=[0],
        restart="on-failure",
        restart_backoff_seconds=60,
    )

    def restarting() -> bool:
        return server.status(launch["launch_id"])["restart_count"] == 1

    eventually(restarting, message="no restart was scheduled")
    status = server.status(launch["launch_id"])
    assert status["state"] == "restarting"  # the backoff wait, visible as such
    assert server.client.post("/launch", json={"model": "x", "gpu_ids": [0]}).status_code == 409
    assert server.stop(launch["launch_id"])["state"] == "stopped"
    assert server.launch(model="x", gpu_ids=[0])["gpu_ids"] == [0]


def test_a_pending_restart_survives_a_control_plane_restart(start_server: ServerFactory) -> None:
    server = start_server()
    launch = server.launch(
        model="m-crash-on-start",
        gpu_ids=[0],
        restart="on-failure",
        max_restarts=5,
        restart_backoff_seconds=1,
    )
    launch_id = launch["launch_id"]
    server.wait_for(launch_id, {"restarting"})
    server.kill()
    server = start_server()
    status = server.status(launch_id)
    assert status["state"] in ("restarting", "bootstrapping"), status
    assert (status["restart"], status["max_restarts"]) == ("on-failure", 5)

    def restarted_again() -> bool:
        return int(server.status(launch_id)["restart_count"]) >= 2

    eventually(restarted_again, timeout=20, message="the restart was not resumed")
    assert server.status(launch_id)["state"] != "failed"
    assert server.stop(launch_id)["state"] == "stopped"


def test_a_launch_that_crashed_while_the_control_plane_was_away_is_restarted(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    ready = server.launch_ready(
        model="m", gpu_ids=[0], restart="on-failure", restart_backoff_seconds=0.2
    )
    server.kill()
    os.killpg(ready["pid"], signal.SIGKILL)
    eventually(lambda: not pid_alive(ready["pid"]), message="the launch did not die")
    server = start_server()
    again = server.wait_for(ready["launch_id"], {"ready"}, timeout=30)
    assert again["restart_count"] == 1
    assert again["pid"] != ready["pid"]
    assert "control plane restarted while the launch was ready" in again["last_error"]
