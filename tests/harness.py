"""Running the real vllm-bootstrap server, with the stand-in nvidia-smi and vLLM, for tests."""

from __future__ import annotations

import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

STANDINS = Path(__file__).parent / "standins"
# Short enough that tests wait little for them, long enough to mean what they mean.
EVICTION_GRACE_SECONDS = "0.2"
IDLE_CHECK_SECONDS = "0.2"
TERMINAL = {"stopped", "failed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_range(size: int) -> tuple[int, int]:
    """A block of `size` consecutive ports that are free right now.

    Taken below Linux's ephemeral range (32768-60999), where no outgoing connection, and so
    none of the thousands of TIME_WAIT sockets a load test leaves, can hold a port.
    """
    for _ in range(500):
        start = random.randrange(20000, 32768 - size)
        if all(_bindable(port) for port in range(start, start + size)):
            return start, start + size - 1
    raise RuntimeError("no free block of ports found")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def standin_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of a server that sees stand-in GPUs and a stand-in vLLM."""
    port_start, port_end = free_port_range(8)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VLLM_", "FAKE_", "CUDA_VISIBLE_DEVICES", "HF_"))
    }
    env.update(
        PATH=f"{STANDINS / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(STANDINS),
        PYTHONUNBUFFERED="1",
        VLLM_BOOTSTRAP_STATE_DIR=str(tmp_path / "state"),
        VLLM_BOOTSTRAP_LOG_DIR=str(tmp_path / "logs"),
        VLLM_LAUNCH_PORT_START=str(port_start),
        VLLM_LAUNCH_PORT_END=str(port_end),
        VLLM_STOP_TIMEOUT_SECONDS="3",
        FAKE_VLLM_LOAD_SECONDS="0.5",
        VLLM_BOOTSTRAP_EVICTION_GRACE_SECONDS=EVICTION_GRACE_SECONDS,
        VLLM_BOOTSTRAP_IDLE_CHECK_SECONDS=IDLE_CHECK_SECONDS,
        VLLM_BOOTSTRAP_FILE_EXPIRY_CHECK_SECONDS=IDLE_CHECK_SECONDS,
        FAKE_GPU_COUNT="2",
        # The stand-in vLLM's models are names, not Hub repositories: tests of downloads
        # turn this on with a stand-in Hub (tests/standins/hub).
        VLLM_BOOTSTRAP_DOWNLOAD_MODELS="0",
        HF_HOME=str(tmp_path / "huggingface"),
    )
    env.update(overrides)
    return env


class _PortTaken(Exception):
    """The server could not bind its port: another process took it first."""


class Server:
    """One real `python -m vllm_bootstrap` process on a loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.host = "127.0.0.1"  # the address it listens on (tests of the safe default widen it)
        key = env.get("VLLM_ACCESS_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "vllm_bootstrap",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]

    def start(self, timeout: float = 20) -> Server:
        """Start it and wait until it answers. A port another test's server took between
        free_port() and our bind (xdist workers pick ports independently) costs a retry on
        a new one; an answer from a server that is not ours never counts."""
        for _attempt in range(3):
            since = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._spawn()
            try:
                self._wait_listening(since, timeout)
                return self
            except _PortTaken:
                self._use_port(free_port())
        raise RuntimeError(f"server found no free port:\n{self.output()}")

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_file_size_limit(self.env.get("STANDIN_FILE_SIZE_LIMIT")),
            )

    def _wait_listening(self, since: int, timeout: float) -> None:
        assert self.process is not None
        listening = f":{self.port} (Press CTRL+C to quit)"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            started = self._output_since(since)
            if self.process.poll() is not None:
                if "address already in use" in started.lower():
                    raise _PortTaken
                raise RuntimeError(f"server exited at start-up:\n{self.output()}")
            if listening in started:  # ours is bound: its answer is its own
                try:
                    if self.client.get("/health").status_code in (200, 401):
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not start in {timeout} s:\n{self.output()}")

    def _output_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def _use_port(self, port: int) -> None:
        self.port = port
        self.url = f"{self.url.rsplit(':', 1)[0]}:{port}"
        headers = self.client.headers
        self.client.close()
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    # --- API helpers -----------------------------------------------------------------

    def launch(self, expect: int = 201, **body: Any) -> dict[str, Any]:
        response = self.client.post("/launch", json=body)
        assert response.status_code == expect, response.text
        return dict(response.json())

    def status(self, launch_id: str) -> dict[str, Any]:
        response = self.client.get(f"/status/{launch_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_for(
        self, launch_id: str, states: Iterable[str], timeout: float = 20
    ) -> dict[str, Any]:
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(launch_id)
            if status["state"] in wanted:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"launch stayed {status['state']}, wanted {wanted}: {status}")
            time.sleep(0.02)

    def launch_ready(self, **body: Any) -> dict[str, Any]:
        launch = self.launch(**body)
        return self.wait_for(launch["launch_id"], {"ready"})

    def stop(self, launch_id: str, wait: bool = True) -> dict[str, Any]:
        # A stop that waits may take the server's whole grace, then its SIGKILL and 10 s
        # more: the client waits longer than the server can (a real vLLM with requests in
        # flight takes its time).
        grace = float(self.env.get("VLLM_STOP_TIMEOUT_SECONDS", "10"))
        response = self.client.post(f"/stop/{launch_id}", params={"wait": wait}, timeout=grace + 20)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def logs(self, launch_id: str) -> str:
        return str(self.client.get(f"/logs/{launch_id}").json()["content"])


def _file_size_limit(limit: str | None) -> Callable[[], None] | None:
    """No file of the server's may grow past `limit` bytes: a write past it fails (EFBIG) as
    on a full disk, without filling a real one."""
    if limit is None:
        return None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))

    return apply


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def helper_pids(log_text: str) -> list[int]:
    """The stand-in's EngineCore and Worker pids, as its log announces them."""
    pids = [int(pid) for pid in re.findall(r"Started engine process with PID (\d+)", log_text)]
    pids += [int(pid) for pid in re.findall(r"worker pid=(\d+)", log_text)]
    if not pids:
        raise AssertionError(f"no EngineCore pid in log:\n{log_text}")
    return pids


def eventually(condition: Callable[[], bool], timeout: float = 10, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message or "condition not met in time")
        time.sleep(0.02)
