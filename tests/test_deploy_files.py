"""The deployment files agree with the package: compose.yaml's image, port, volume, GPU
reservation, shared memory and stop grace period; the Dockerfile's paths and defaults."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from vllm_bootstrap.config import GRACEFUL_SHUTDOWN_SECONDS, Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _service() -> dict:
    (service,) = COMPOSE["services"].values()
    return dict(service)


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_compose_runs_our_image_on_our_port_with_the_data_volume() -> None:
    service = _service()
    assert service["image"].startswith("${VLLM_BOOTSTRAP_IMAGE:?")  # no guessed default
    assert service["ports"] == [f"{Settings.port}:{Settings.port}"]
    assert any(volume.endswith(":/workspace") for volume in service["volumes"])
    assert "${VLLM_ACCESS_KEY:?" in service["environment"]["VLLM_ACCESS_KEY"]


def test_compose_reserves_the_gpus_and_enough_shared_memory() -> None:
    service = _service()
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert (device["driver"], device["count"], device["capabilities"]) == ("nvidia", "all", ["gpu"])
    assert service["ipc"] == "host"


def test_compose_waits_longer_than_the_server_stops_its_launches() -> None:
    grace = _seconds(_service()["stop_grace_period"])
    assert grace > Settings.stop_timeout_seconds + GRACEFUL_SHUTDOWN_SECONDS


def test_the_dockerfile_keeps_state_logs_and_models_under_the_volume() -> None:
    for variable in ("VLLM_BOOTSTRAP_STATE_DIR", "VLLM_BOOTSTRAP_LOG_DIR", "HF_HOME"):
        assert re.search(rf"{variable}=/workspace/", DOCKERFILE), variable
    assert f"EXPOSE {Settings.port}" in DOCKERFILE
    assert re.search(r"^ARG VLLM_BASE_IMAGE=vllm/vllm-openai:v[\d.]+$", DOCKERFILE, re.M)
