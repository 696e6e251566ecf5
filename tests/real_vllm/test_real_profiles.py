"""Model profiles against a real vLLM (its CPU build, the tiny generated model): a /v1
request loads a profile on demand and gets vLLM's answer; the idle TTL frees it; a profile
with sleep mode fails with vLLM's own reason, as vLLM's CPU build has no sleep mode."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest

from tests.harness import Server, eventually
from tests.real_vllm import build_env
from tests.real_vllm.test_real_vllm import STARTUP_TIMEOUT, VLLM_FLAGS
from vllm_bootstrap.supervision.processes import group_members

pytestmark = [pytest.mark.real_vllm, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def profile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not build_env.is_built():
        pytest.fail(f"the real-vLLM environment is not built at {build_env.cache_root()}")
    workdir = tmp_path_factory.mktemp("real-profiles")
    env = build_env.server_env(
        workdir,
        gpus=1,
        VLLM_STARTUP_TIMEOUT_SECONDS=str(STARTUP_TIMEOUT),
        HF_HUB_OFFLINE="1",
        VLLM_BATCH_MODEL_WAIT_SECONDS=str(STARTUP_TIMEOUT),
    )
    server = Server(env, workdir / "server.log").start()
    yield server
    server.terminate(timeout=120)
    server.client.close()


def _put(server: Server, name: str, **fields: object) -> None:
    body = {"model": str(build_env.model_dir()), "extra_args": VLLM_FLAGS, **fields}
    response = server.client.put(f"/models/{name}", json=body)
    assert response.status_code == 200, response.text


def test_a_request_loads_the_profile_on_demand_and_the_ttl_frees_it(
    profile_server: Server,
) -> None:
    _put(profile_server, "tiny-on-demand", idle_ttl_seconds=5)
    client = openai.OpenAI(
        base_url=f"{profile_server.url}/v1", api_key="unused", max_retries=0, timeout=600
    )
    listed = {model.id: model for model in client.models.list()}
    assert listed["tiny-on-demand"].model_extra["loaded"] is False

    completion = client.completions.create(model="tiny-on-demand", prompt="Hi", max_tokens=3)

    assert completion.choices[0].finish_reason in ("length", "stop")
    status = profile_server.client.get("/models/tiny-on-demand").json()["status"]
    assert status["state"] == "loaded"
    launch = profile_server.status(status["launch_id"])
    assert (launch["profile"], launch["reason"]) == ("tiny-on-demand", "a /v1 request")
    assert "Starting vLLM server on" in profile_server.logs(launch["launch_id"])

    stopped = profile_server.wait_for(launch["launch_id"], {"stopped"}, timeout=120)
    assert stopped["state"] == "stopped"
    eventually(lambda: group_members(launch["pid"]) == [], timeout=10, message="processes left")
    assert profile_server.client.get("/gpus").json()[0]["launch_id"] is None
    status = profile_server.client.get("/models/tiny-on-demand").json()["status"]
    assert status["state"] == "not loaded"


def test_sleep_mode_on_vllms_cpu_build_fails_with_vllms_reason(profile_server: Server) -> None:
    _put(profile_server, "tiny-sleeper", sleep=True)
    response = profile_server.client.post(
        "/v1/completions",
        json={"model": "tiny-sleeper", "prompt": "Hi", "max_tokens": 3},
        timeout=STARTUP_TIMEOUT,
    )
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_load_failed"
    assert "Sleep mode is not supported on current platform" in error["message"]


def test_requests_through_the_proxy_keep_a_profile_launch_from_its_ttl(
    profile_server: Server,
) -> None:
    """The usage ledger counts /proxy like /v1: requests sent straight to the launch, for
    longer than its TTL, keep it loaded; once they stop, the TTL frees it."""
    _put(profile_server, "tiny-proxied", idle_ttl_seconds=3)
    loaded = profile_server.client.post(
        "/models/tiny-proxied/load", params={"wait": True}, timeout=STARTUP_TIMEOUT
    )
    assert loaded.status_code == 200, loaded.text
    launch_id = loaded.json()["status"]["launch_id"]
    body = {"model": "tiny-proxied", "prompt": "Hi", "max_tokens": 2}
    for _ in range(7):  # about 7 s of use, past the 3 s TTL
        answer = profile_server.client.post(f"/proxy/{launch_id}/v1/completions", json=body)
        assert answer.status_code == 200, answer.text
        time.sleep(1)  # the pause between a user's requests, under the TTL
    assert profile_server.status(launch_id)["state"] == "ready"
    counted = [
        line
        for line in profile_server.client.get("/metrics").text.splitlines()
        if line.startswith("vllm_bootstrap_requests_total{")
        and f'launch_id="{launch_id}"' in line
        and 'route="proxy"' in line
        and 'status="200"' in line
    ]
    [line] = counted
    assert line.endswith(" 7.0"), line  # all seven, counted where they passed
    profile_server.wait_for(launch_id, {"stopped"}, timeout=60)
