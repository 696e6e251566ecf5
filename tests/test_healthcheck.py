"""The container's health check asks /health with the key when one is set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ServerFactory


def _check(port: int, key: str | None) -> int:
    env = {"VLLM_BOOTSTRAP_PORT": str(port), **({"VLLM_ACCESS_KEY": key} if key else {})}
    command = [sys.executable, "-m", "vllm_bootstrap.healthcheck"]
    return subprocess.run(command, env=env, check=False, timeout=30).returncode


def test_the_health_check_passes_with_and_without_a_key(start_server: ServerFactory) -> None:
    open_server = start_server()
    keyed = start_server(VLLM_ACCESS_KEY="sesame")
    assert _check(open_server.port, None) == 0
    assert _check(keyed.port, "sesame") == 0
    assert _check(keyed.port, None) == 1  # the key is needed, and the check sends it


def test_the_health_check_fails_when_nothing_answers(start_server: ServerFactory) -> None:
    server = start_server()
    server.terminate()
    assert _check(server.port, None) == 1


def test_the_health_check_uses_the_admin_key_the_server_made(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server(VLLM_ACCESS_KEY="made-at-first-start")
    state = tmp_path / "made"
    state.mkdir()
    env = {"VLLM_BOOTSTRAP_PORT": str(server.port), "VLLM_BOOTSTRAP_STATE_DIR": str(state)}
    command = [sys.executable, "-m", "vllm_bootstrap.healthcheck"]
    assert subprocess.run(command, env=env, check=False, timeout=30).returncode == 1
    (state / "admin-key").write_text("made-at-first-start\n")  # as keys/admin_key.py keeps it
    assert subprocess.run(command, env=env, check=False, timeout=30).returncode == 0
