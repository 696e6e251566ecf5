"""A hostile environment rather than a hostile client: disks that fill up (issue 9).

The state or log directory is a 1 MiB tmpfs of its own, filled on purpose while the server
runs.
Mounting needs root (CI and the development machines run as root); elsewhere these skip."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.harness import eventually, helper_pids, pid_alive


def small_disk(folder: Path) -> Iterator[Path]:
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def small_state_disk(tmp_path: Path) -> Iterator[Path]:
    yield from small_disk(tmp_path / "state")


@pytest.fixture
def small_log_disk(tmp_path: Path) -> Iterator[Path]:
    yield from small_disk(tmp_path / "logs")


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass  # full
    finally:
        os.close(fd)
    return filler


def stored_state(disk: Path, launch_id: str) -> tuple[str, list[int]]:
    with sqlite3.connect(disk / "state.sqlite3") as db:
        state = db.execute("SELECT state FROM launches WHERE launch_id = ?", (launch_id,))
        leases = db.execute("SELECT gpu_index FROM gpu_leases WHERE launch_id = ?", (launch_id,))
        return state.fetchone()[0], [row[0] for row in leases.fetchall()]


def test_a_stop_on_a_full_state_disk_still_ends_the_processes_and_is_written_later(
    small_state_disk: Path, start_server: ServerFactory
) -> None:
    server = start_server()
    ready = server.launch_ready(model="m", gpu_ids=[0])
    engines = helper_pids(server.logs(ready["launch_id"]))
    filler = fill(small_state_disk)

    stopped = server.client.post(f"/stop/{ready['launch_id']}", params={"wait": True})
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["state"] == "stopped"
    assert not any(pid_alive(pid) for pid in [ready["pid"], *engines])
    assert stored_state(small_state_disk, ready["launch_id"]) == ("ready", [0])  # not yet
    assert "could not be written (database or disk is full)" in server.output()

    # The stopped launch's lease is still in the unwritten database: 503 with the reason,
    # not a 409 for a GPU that is free.
    refused = server.client.post("/launch", json={"model": "m", "gpu_ids": [0]})
    assert refused.status_code == 503
    assert "database or disk is full" in refused.json()["detail"]

    filler.unlink()
    eventually(
        lambda: stored_state(small_state_disk, ready["launch_id"]) == ("stopped", []),
        timeout=10,
        message="the stop was never written",
    )
    assert "memory and database agree" in server.output()
    assert server.launch(model="again", gpu_ids=[0])["state"] == "bootstrapping"


def test_a_crash_on_a_full_state_disk_still_cleans_up_and_frees_the_gpu(
    small_state_disk: Path, start_server: ServerFactory
) -> None:
    server = start_server(FAKE_VLLM_CRASH_AFTER_SECONDS="1.5")
    ready = server.launch_ready(model="m-crash-after-ready", gpu_ids=[1])
    engines = helper_pids(server.logs(ready["launch_id"]))
    filler = fill(small_state_disk)
    failed = server.wait_for(ready["launch_id"], {"failed"}, timeout=20)
    assert "OutOfMemoryError" in failed["error"]
    eventually(lambda: not any(pid_alive(pid) for pid in engines), message="remnants live on")
    filler.unlink()
    eventually(
        lambda: stored_state(small_state_disk, ready["launch_id"]) == ("failed", []),
        timeout=10,
        message="the failure was never written",
    )


def test_a_launch_on_a_full_log_disk_fails_and_says_so(
    small_log_disk: Path, start_server: ServerFactory
) -> None:
    server = start_server()
    fill(small_log_disk)
    response = server.client.post("/launch", json={"model": "m", "gpu_ids": [0]})
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert f"the log directory {small_log_disk} is full" in detail
    (failed,) = server.client.get("/launch", params={"all": True}).json()
    assert failed["state"] == "failed"
    assert server.launch(model="m", gpu_ids=[0], expect=503)  # nothing holds the GPU
