from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Server, standin_env
from tests.hub import StandinHub
from vllm_bootstrap.supervision.recovery import kill_remnants

ServerFactory = Callable[..., Server]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start real servers (stand-in GPUs and vLLM); environment overrides as keywords. Every
    server started here is stopped at the end of the test, restarted ones included."""
    servers: list[Server] = []

    def start(env: dict[str, str] | None = None, **overrides: str) -> Server:
        """A new server; `env` reuses another's whole environment (a restart on its state)."""
        env = env if env is not None else standin_env(tmp_path, **overrides)
        server = Server(env, tmp_path / f"server-{len(servers)}.log").start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.process is not None and server.process.poll() is not None:
            # It ended before the test did: its log says why (shown if the test failed).
            print(f"server on port {server.port} exited with {server.process.returncode}:")
            print(server.output()[-4000:])
        with contextlib.suppress(Exception):
            server.terminate(timeout=30)
        server.kill()
        server.client.close()
    _kill_leftover_groups(tmp_path / "state" / "state.sqlite3")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[StandinHub]:
    """A stand-in Hugging Face Hub with no repositories yet (`add_repo`)."""
    standin = StandinHub(tmp_path / "hub").start()
    yield standin
    standin.stop()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (@pytest.mark.anyio) run on asyncio, as the server does."""
    return "asyncio"


@pytest.fixture
def server(start_server: ServerFactory) -> Server:
    return start_server()


def _kill_leftover_groups(db_path: Path) -> None:
    """Safety net: no stand-in process outlives its test, whatever the test did. Processes
    are found by the launch marker in their environment, never by a recorded pid alone:
    pids wrap (32768 here) and a stale one may be another test's process by now."""
    if not db_path.exists():
        return
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        live = [
            row[0]
            for row in db.execute(
                "SELECT launch_id FROM launches WHERE state NOT IN ('stopped', 'failed')"
            )
        ]
    for launch_id in live:
        kill_remnants(launch_id)
