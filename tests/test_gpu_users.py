"""A GPU held by a process that is not one of our launches is refused unless forced."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.harness import Server


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process that nvidia-smi will report on a GPU: a leftover vLLM, say."""
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def apps_file(tmp_path: Path) -> Path:
    path = tmp_path / "gpu-apps.json"
    path.write_text("[]")
    return path


@pytest.fixture
def server_with_apps(start_server: ServerFactory, apps_file: Path) -> Server:
    return start_server(FAKE_NVIDIA_SMI_APPS=str(apps_file))


def report(apps_file: Path, *apps: dict[str, int]) -> None:
    apps_file.write_text(json.dumps(list(apps)))


def test_foreign_process_on_a_gpu_is_a_conflict(
    server_with_apps: Server, apps_file: Path, stranger: subprocess.Popen[bytes]
) -> None:
    report(apps_file, {"pid": stranger.pid, "gpu": 1, "used_memory": 30512})
    refused = server_with_apps.client.post("/launch", json={"model": "m", "gpu_ids": [1]})
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert f"GPU 1 by pid {stranger.pid} (sleep, 30512 MiB)" in detail
    assert '"force": true' in detail
    assert server_with_apps.client.get("/launch", params={"all": True}).json() == []
    # Another GPU is fine, and force skips the check.
    assert server_with_apps.launch(model="m", gpu_ids=[0])["gpu_ids"] == [0]
    assert server_with_apps.launch(model="m", gpu_ids=[1], force=True)["gpu_ids"] == [1]


def test_pid_outside_this_container_is_reported_too(
    server_with_apps: Server, apps_file: Path
) -> None:
    report(apps_file, {"pid": 4_000_000, "gpu": 0, "used_memory": 100})
    refused = server_with_apps.client.post("/launch", json={"model": "m"})
    assert refused.status_code == 409
    assert "pid 4000000 (not visible from here, 100 MiB)" in refused.json()["detail"]


def test_our_own_launches_are_not_foreign(server_with_apps: Server, apps_file: Path) -> None:
    ours = server_with_apps.launch_ready(model="m", gpu_ids=[0])
    # nvidia-smi sees our vLLM on its GPU, and (say, through a shared context) on GPU 1.
    report(apps_file, {"pid": ours["pid"], "gpu": 0}, {"pid": ours["pid"], "gpu": 1})
    assert server_with_apps.launch(model="m", gpu_ids=[1])["gpu_ids"] == [1]


def test_failing_process_query_is_503(start_server: ServerFactory, tmp_path: Path) -> None:
    apps = tmp_path / "broken.json"
    apps.write_text("[{")  # the stand-in crashes on it, like a broken driver would
    server = start_server(FAKE_NVIDIA_SMI_APPS=str(apps))
    refused = server.client.post("/launch", json={"model": "m"})
    assert refused.status_code == 503
    assert "force" in refused.json()["detail"]
