"""Each launch is supervised on its own: readiness, exits, deadlines and stops."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.harness import Server, eventually, helper_pids, pid_alive


def leases(tmp_path: Path) -> dict[int, str]:
    """GPU ownership as the state store has it, read without asking the server."""
    db = sqlite3.connect(tmp_path / "state" / "state.sqlite3")
    try:
        return dict(db.execute("SELECT gpu_index, launch_id FROM gpu_leases").fetchall())
    finally:
        db.close()


@pytest.mark.parametrize("bind_early", [False, True], ids=["refuses-while-loading", "binds-early"])
def test_ready_only_once_vllm_answers(start_server: ServerFactory, bind_early: bool) -> None:
    env = {"FAKE_VLLM_LOAD_SECONDS": "2"} | ({"FAKE_VLLM_BIND_EARLY": "1"} if bind_early else {})
    server = start_server(**env)
    launch = server.launch(model="m", gpu_ids=[0])
    # Halfway through its start-up (its log says it compiles), it answers nothing yet.
    eventually(lambda: "Dynamo bytecode transform" in server.logs(launch["launch_id"]))
    assert server.status(launch["launch_id"])["state"] == "bootstrapping"
    ready = server.wait_for(launch["launch_id"], {"ready"})
    assert "Application startup complete." in server.logs(launch["launch_id"])
    assert ready["served_models"] == ["m"]


def test_served_model_name_is_what_ready_reports(server: Server) -> None:
    ready = server.launch_ready(
        model="/models/llama", gpu_ids=[0], extra_args=["--served-model-name", "llama"]
    )
    assert ready["served_models"] == ["llama"]


def test_stop_ends_the_whole_process_group(server: Server) -> None:
    ready = server.launch_ready(model="m", gpu_ids=[0])
    helpers = helper_pids(server.logs(ready["launch_id"]))
    assert len(helpers) == 2  # EngineCore, and its Worker
    assert all(pid_alive(pid) for pid in [ready["pid"], *helpers])
    stopping = server.stop(ready["launch_id"], wait=False)
    assert stopping["state"] == "stopping"
    stopped = server.wait_for(ready["launch_id"], {"stopped"})
    assert stopped["return_code"] == 0
    assert stopped["error"] is None
    assert not any(pid_alive(pid) for pid in [ready["pid"], *helpers])
    assert server.launch(model="again", gpu_ids=[0])["gpu_ids"] == [0]


def test_stop_escalates_to_sigkill(server: Server) -> None:
    ready = server.launch_ready(model="m-ignore-sigterm", gpu_ids=[0])
    helpers = helper_pids(server.logs(ready["launch_id"]))
    started = time.monotonic()
    server.stop(ready["launch_id"], wait=False)
    # The stop never blocks the server: other requests are answered meanwhile.
    assert server.status(ready["launch_id"])["state"] == "stopping"
    assert server.client.get("/health").status_code == 200
    stopped = server.wait_for(ready["launch_id"], {"stopped"}, timeout=20)
    assert time.monotonic() - started >= 2.5  # VLLM_STOP_TIMEOUT_SECONDS=3 of grace first
    assert stopped["return_code"] == -9
    assert not any(pid_alive(pid) for pid in [ready["pid"], *helpers])


def test_stop_while_bootstrapping(start_server: ServerFactory) -> None:
    server = start_server(FAKE_VLLM_LOAD_SECONDS="30")
    launch = server.launch(model="m", gpu_ids=[0])
    stopped = server.stop(launch["launch_id"], wait=True)
    assert stopped["state"] == "stopped"
    assert not pid_alive(launch["pid"])


def test_stop_is_harmless_when_ended_and_404_when_unknown(server: Server) -> None:
    launch = server.launch_ready(model="m", gpu_ids=[0])
    assert server.stop(launch["launch_id"])["state"] == "stopped"
    again = server.stop(launch["launch_id"])
    assert again["state"] == "stopped"
    assert again["updated_at"] == server.status(launch["launch_id"])["updated_at"]
    assert server.client.post("/stop/nope").status_code == 404


def test_crash_at_start_up_fails_and_frees_the_gpu(server: Server, tmp_path: Path) -> None:
    launch = server.launch(model="m-crash-on-start", gpu_ids=[0])
    eventually(lambda: not pid_alive(launch["pid"]), message="stand-in did not crash")
    eventually(lambda: 0 not in leases(tmp_path), timeout=2, message="GPU 0 still leased")
    failed = server.status(launch["launch_id"])
    assert failed["state"] == "failed"
    assert failed["return_code"] == 1
    assert failed["error"] == (
        "vLLM exited with code 1: RuntimeError: stand-in crash during start-up "
        "(the model name asked for it)"
    )
    assert not any(pid_alive(pid) for pid in helper_pids(server.logs(launch["launch_id"])))


def test_crash_after_ready_fails_and_frees_the_gpu(server: Server, tmp_path: Path) -> None:
    ready = server.launch_ready(model="m-crash-after-ready", gpu_ids=[1])
    helpers = helper_pids(server.logs(ready["launch_id"]))
    assert leases(tmp_path) == {1: ready["launch_id"]}
    eventually(lambda: not pid_alive(ready["pid"]), message="stand-in did not crash")
    eventually(lambda: leases(tmp_path) == {}, timeout=2, message="GPU 1 still leased")
    failed = server.status(ready["launch_id"])
    assert failed["state"] == "failed"
    assert failed["error"].startswith("vLLM exited with code 1 after it was ready: ")
    assert "torch.OutOfMemoryError: CUDA out of memory" in failed["error"]
    assert not any(pid_alive(pid) for pid in helpers)


def test_startup_deadline_stops_and_fails_the_launch(start_server: ServerFactory) -> None:
    server = start_server(VLLM_STARTUP_TIMEOUT_SECONDS="1")
    launch = server.launch(model="m-slow-start", gpu_ids=[0])
    failed = server.wait_for(launch["launch_id"], {"failed"}, timeout=20)
    assert "did not become ready within VLLM_STARTUP_TIMEOUT_SECONDS (1 s)" in failed["error"]
    assert not pid_alive(launch["pid"])


def test_a_timed_out_start_is_failing_until_its_processes_are_gone(
    start_server: ServerFactory,
) -> None:
    server = start_server(VLLM_STARTUP_TIMEOUT_SECONDS="1")
    launch = server.launch(model="m-slow-start-ignore-sigterm", gpu_ids=[0])
    failing = server.wait_for(launch["launch_id"], {"failing", "failed"}, timeout=10)
    assert failing["state"] == "failing"  # SIGTERM is ignored: SIGKILL follows after 3 s
    assert "did not become ready within VLLM_STARTUP_TIMEOUT_SECONDS (1 s)" in failing["error"]
    assert pid_alive(launch["pid"])
    # The GPU stays owned while the processes are ended, and a stop changes nothing.
    assert server.client.post("/launch", json={"model": "x", "gpu_ids": [0]}).status_code == 409
    assert server.stop(launch["launch_id"], wait=False)["state"] == "failing"
    failed = server.wait_for(launch["launch_id"], {"failed"}, timeout=20)
    assert failed["return_code"] == -9
    assert failed["error"] == failing["error"]
    assert not pid_alive(launch["pid"])


def test_list_shows_live_launches_and_all_on_request(server: Server) -> None:
    live = server.launch(model="live", gpu_ids=[0])
    ended = server.launch_ready(model="ended", gpu_ids=[1])
    server.stop(ended["launch_id"])
    assert [item["launch_id"] for item in server.client.get("/launch").json()] == [
        live["launch_id"]
    ]
    everything = server.client.get("/launch", params={"all": "true"}).json()
    assert {item["launch_id"] for item in everything} == {live["launch_id"], ended["launch_id"]}
    assert server.client.get("/status/nope").status_code == 404


def test_server_shutdown_stops_every_launch(start_server: ServerFactory, tmp_path: Path) -> None:
    server = start_server()
    ready = server.launch_ready(model="a", gpu_ids=[0])
    loading = server.launch(model="b", gpu_ids=[1])
    engines = helper_pids(server.logs(ready["launch_id"]))
    # uvicorn re-raises the signal after its graceful shutdown, as a well-behaved server does.
    assert server.terminate() in (0, -15)
    assert "Finished server process" in server.output()
    for pid in [ready["pid"], loading["pid"], *engines]:
        assert not pid_alive(pid)
    db = sqlite3.connect(tmp_path / "state" / "state.sqlite3")
    try:
        states = dict(db.execute("SELECT model, state FROM launches").fetchall())
    finally:
        db.close()
    assert states == {"a": "stopped", "b": "stopped"}
    assert leases(tmp_path) == {}
