"""Running the real server for benchmarks: its own fake nvidia-smi, a chosen vLLM command.

Benchmarks import nothing from tests/: what they need to start a server is here.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# The GPUs for nvidia-smi to list (one unless asked), and no processes on them.
# The readings (GET /stats, and a cluster's view of another box) ask for utilisation.
FAKE_NVIDIA_SMI = """#!/bin/sh
case "$*" in
  *utilization.gpu*)
    for i in $(seq 0 {last}); do echo "$i, 0, 81559, 0, 30, 60, 700, Bench GPU"; done ;;
  *--query-gpu*)
    for i in $(seq 0 {last}); do echo "$i, GPU-0000000$i-bench, Bench GPU, 81559, 0"; done ;;
esac
"""


# What every nginx of the benchmarks shares: one worker, files in its own folder, no access log.
NGINX_PREAMBLE = """
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections 4096; }}
"""
NGINX_HTTP_PREAMBLE = """
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
"""


def nginx_config(workdir: Path, http_block: str) -> str:
    """A whole nginx configuration around the given `http { }` contents."""
    preamble = NGINX_PREAMBLE.format(workdir=workdir)
    http_preamble = NGINX_HTTP_PREAMBLE.format(workdir=workdir)
    return f"{preamble}http {{{http_preamble}{http_block}}}\n"


def vllm_arguments() -> argparse.Namespace:
    """What an upstream started as the server's vLLM command needs of its arguments: the
    model, host and port the control plane passes (the rest, --tensor-parallel-size and
    the like, is ignored)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", nargs="+")
    args, _ = parser.parse_known_args()
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def canned_vllm_command() -> str:
    return f"{sys.executable} {BENCH / 'canned_vllm.py'}"


class BenchServer:
    """One `python -m vllm_bootstrap` on loopback; `source` runs another checkout's code."""

    def __init__(
        self,
        workdir: Path,
        vllm_command: str,
        source: Path | None = None,
        gpus: int = 1,
        extra_env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        wrapper: tuple[str, ...] = (),
        start_timeout: float = 20,
    ) -> None:
        """`wrapper` runs it inside something (`ip netns exec BOX`, where it listens on
        that box's `host`)."""
        self.port = free_port()
        self.host = host
        self.workdir = workdir
        self.launched: dict[str, Any] = {}  # the launch a benchmark made, once made
        self.scoped_key: str | None = None  # a scoped key a benchmark made, once made
        bin_dir = workdir / "bin"
        bin_dir.mkdir(exist_ok=True)
        nvidia_smi = bin_dir / "nvidia-smi"
        nvidia_smi.write_text(FAKE_NVIDIA_SMI.format(last=gpus - 1))
        nvidia_smi.chmod(0o755)
        name = f"server-{self.port}"
        env = {key: value for key, value in os.environ.items() if not key.startswith("VLLM_")}
        env.update(
            PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
            VLLM_BOOTSTRAP_STATE_DIR=str(workdir / name / "state"),
            VLLM_BOOTSTRAP_LOG_DIR=str(workdir / name / "logs"),
            VLLM_LAUNCH_PORT_START=str(20000 + self.port % 10000),
            VLLM_LAUNCH_PORT_END=str(20000 + self.port % 10000 + 20),
            VLLM_BOOTSTRAP_VLLM_COMMAND=vllm_command,
        )
        if source is not None:
            env["PYTHONPATH"] = str(source / "src")
        env.update(extra_env or {})
        self.access_key = env.get("VLLM_ACCESS_KEY")
        self.log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                *wrapper,
                sys.executable,
                "-m",
                "vllm_bootstrap",
                "--host",
                host,
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_up(start_timeout)

    def request(self, method: str, path: str, body: object | None = None) -> Any:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"content-type": "application/json"}
        if self.access_key:
            headers["authorization"] = f"Bearer {self.access_key}"
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        if response.status >= 400:
            raise RuntimeError(f"{method} {path}: {response.status} {data.decode()}")
        return json.loads(data)

    def launch_ready(
        self, model: str, timeout: float = 30, gpu: int = 0, node: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "gpu_ids": [gpu]}
        if node is not None:
            body["node"] = node  # another box of a cluster
        launch = self.request("POST", "/launch", body)
        deadline = time.monotonic() + timeout
        while launch["state"] != "ready":
            if time.monotonic() > deadline or launch["state"] in ("failed", "stopped"):
                raise RuntimeError(f"launch did not become ready: {launch}")
            time.sleep(0.02)
            launch = self.request("GET", f"/status/{launch['launch_id']}")
        return dict(launch)

    def stop(self, timeout: float = 30) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout)
        self.log.close()

    def _wait_until_up(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log.name}")
            try:
                self.request("GET", "/health")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start; see {self.log.name}")
