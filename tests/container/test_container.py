"""The real image, built and run with podman: what a user of `docker run` would see.

A local CPU base image (base_image.py) stands in for `vllm/vllm-openai`; our Dockerfile is
built on it unchanged (`--build-arg VLLM_BASE_IMAGE=...`) and run with the tiny generated
model mounted. Checked as a user would: the health check, the key, a launch that becomes
ready, a chat completion through /v1 with the `openai` client, the two Python environments
kept apart, `podman stop` ending every launch cleanly in time, and the state surviving on
the volume into a second container.

Run with `uv run pytest -m container` (root, podman, runc and debootstrap: `.ci/run`
installs them).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.container import base_image
from tests.harness import free_port, free_port_range
from tests.real_vllm import build_env

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/vllm-bootstrap:test-cpu"
KEY = "container-key"
SERVED_NAME = "tiny-llama"
STOP_TIMEOUT = 20
# What podman needs on our machines (the notes): runc, not crun; explicit limits.
RUNTIME = ["--runtime", "runc", "--ulimit", "nofile=16384:16384", "--ulimit", "nproc=4096:4096"]


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: .ci/run installs podman, runc and debootstrap")
    base = base_image.build()
    # Our machines reach package registries only through their own CA: the build gets the
    # certificates and tells pip and uv to use them, from outside the Dockerfile.
    config = tmp_path_factory.mktemp("build-config")
    (config / "uv.toml").write_text("native-tls = true\n")
    (config / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    started = time.monotonic()
    podman(
        # Docker's image format: OCI images carry no HEALTHCHECK.
        "build", *RUNTIME, "--format", "docker", "--network", "host",
        "-v", "/etc/ssl/certs:/etc/ssl/certs:ro",
        "-v", f"{config / 'uv.toml'}:/etc/uv/uv.toml:ro",
        "-v", f"{config / 'pip.conf'}:/etc/pip.conf:ro",
        "--build-arg", f"VLLM_BASE_IMAGE={base}",
        "-t", IMAGE, str(ROOT),
        timeout=1200,
    )  # fmt: skip
    print(f"\nimage built in {time.monotonic() - started:.0f} s")
    return IMAGE


class Container:
    def __init__(self, image: str, data: Path, name: str, key: str | None = KEY) -> None:
        """`key` None: started without VLLM_ACCESS_KEY, so the server makes its own."""
        self.name = name
        self.port = free_port()
        start, end = free_port_range(4)
        podman(
            "run", "-d", *RUNTIME, "--network", "host", "--shm-size", "2g",
            "--name", name, "--stop-timeout", str(STOP_TIMEOUT + 10),
            "-v", f"{data}:/workspace",
            "-v", f"{build_env.model_dir()}:/models/tiny:ro",
            *(("-e", f"VLLM_ACCESS_KEY={key}") if key else ()),
            "-e", f"VLLM_BOOTSTRAP_PORT={self.port}",
            "-e", f"VLLM_LAUNCH_PORT_START={start}", "-e", f"VLLM_LAUNCH_PORT_END={end}",
            "-e", f"VLLM_STOP_TIMEOUT_SECONDS={STOP_TIMEOUT}",
            "-e", "VLLM_CPU_KVCACHE_SPACE=1", "-e", "HF_HUB_OFFLINE=1",
            image,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = key or self._made_key(data / "vllm-bootstrap" / "state" / "admin-key")
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )
        self._wait_until_up()

    def _made_key(self, path: Path, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not path.is_file() or not path.read_text().strip():
            if time.monotonic() > deadline:
                raise AssertionError(f"no admin key was made:\n{self.logs()}")
            time.sleep(0.2)
        return path.read_text().strip()

    def _wait_until_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"the container did not answer:\n{self.logs()}")

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *command, check=False)

    def remove(self) -> None:
        self.client.close()
        podman("rm", "-f", "-t", "0", self.name, check=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workspace")


@pytest.fixture(scope="module")
def container(image: str, data: Path) -> Iterator[Container]:
    first = Container(image, data, f"vllm-bootstrap-test-{free_port()}")
    yield first
    first.remove()


@pytest.fixture(scope="module")
def ready_launch(container: Container) -> dict:
    response = container.client.post(
        "/launch",
        json={
            "model": "/models/tiny",
            "extra_args": [
                "--dtype", "float32", "--max-model-len", "256", "--max-num-seqs", "4",
                "--enforce-eager", "--served-model-name", SERVED_NAME,
            ],
        },
    )  # fmt: skip
    assert response.status_code == 201, response.text
    launch_id = response.json()["launch_id"]
    started = time.monotonic()
    while (status := container.client.get(f"/status/{launch_id}").json())["state"] not in (
        "ready",
        "failed",
    ):
        assert time.monotonic() - started < 600, status
        time.sleep(0.25)
    log = container.client.get(f"/logs/{launch_id}").json()["content"]
    assert status["state"] == "ready", f"{status}\n{log[-3000:]}"
    print(f"\nlaunch ready in the container in {time.monotonic() - started:.0f} s")
    return dict(status)


def test_a_container_started_without_a_key_makes_one_and_shows_it_once(
    image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    keyless = Container(image, tmp_path_factory.mktemp("keyless"), f"keyless-{free_port()}", None)
    try:
        assert keyless.logs().count(keyless.key) == 1
        assert httpx.get(f"{keyless.url}/health", timeout=10).status_code == 401
        assert keyless.client.get("/launch").status_code == 200
        assert podman("healthcheck", "run", keyless.name, check=False).returncode == 0
    finally:
        keyless.remove()


def test_the_key_is_enforced_and_the_health_check_passes(container: Container) -> None:
    assert httpx.get(f"{container.url}/health", timeout=10).status_code == 401
    assert container.client.get("/health").json()["status"] == "ok"
    assert podman("healthcheck", "run", container.name, check=False).returncode == 0


def test_the_two_python_environments_are_apart(container: Container) -> None:
    ours = "/opt/vllm-bootstrap/venv/bin/python"
    assert container.exec(ours, "-c", "import vllm_bootstrap").returncode == 0
    assert container.exec(ours, "-c", "import ray").returncode == 0  # a head or a worker
    assert container.exec(ours, "-c", "import vllm").returncode != 0
    assert container.exec("python3", "-c", "import vllm").returncode == 0
    assert container.exec("python3", "-c", "import vllm_bootstrap").returncode != 0


def test_a_cpu_launch_serves_the_openai_client(container: Container, ready_launch: dict) -> None:
    assert ready_launch["gpu_ids"] == []
    client = openai.OpenAI(base_url=f"{container.url}/v1", api_key=KEY, max_retries=0)
    chat = client.chat.completions.create(
        model=SERVED_NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert chat.choices[0].finish_reason in ("length", "stop")


def test_stop_ends_the_launch_cleanly_in_time_and_state_survives(
    image: str, container: Container, ready_launch: dict, data: Path
) -> None:
    started = time.monotonic()
    podman("stop", "-t", str(STOP_TIMEOUT + 10), container.name, timeout=120)
    stopped_in = time.monotonic() - started
    exit_code = podman("inspect", "-f", "{{.State.ExitCode}}", container.name).stdout.strip()
    logs = container.logs()
    # The server's own clean exit (tini passes on its SIGTERM status), not a SIGKILL (137).
    assert exit_code in ("0", "143"), logs[-3000:]
    assert stopped_in < STOP_TIMEOUT, logs[-3000:]
    assert f"launch {ready_launch['launch_id']}: stopped" in logs
    print(f"\npodman stop took {stopped_in:.1f} s")

    second = Container(image, data, f"vllm-bootstrap-test-{free_port()}")
    try:
        launches = second.client.get("/launch", params={"all": True}).json()
        assert [(each["launch_id"], each["state"]) for each in launches] == [
            (ready_launch["launch_id"], "stopped")
        ]
        # vLLM ended on its SIGTERM within the stop timeout: never SIGKILLed.
        assert launches[0]["return_code"] != -9, launches[0]
    finally:
        second.remove()
