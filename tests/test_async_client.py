"""The async client (vllm_bootstrap.client.AsyncClient) against the real server and the
stand-in vLLM, with the access key set: the same requests as the sync client, awaited."""

from __future__ import annotations

import pytest

from tests.conftest import ServerFactory
from tests.harness import Server
from vllm_bootstrap.client import AsyncClient, LaunchFailed

KEY = "async-key"


@pytest.fixture
def keyed(start_server: ServerFactory) -> Server:
    return start_server(VLLM_ACCESS_KEY=KEY, FAKE_VLLM_LOAD_SECONDS="1.3")


@pytest.mark.anyio
async def test_run_waits_with_progress_follows_logs_and_stops_on_exceptions(
    keyed: Server,
) -> None:
    async with AsyncClient(keyed.url, key=KEY) as client:
        phases: list[str | None] = []
        launch = await client.launch("org/model", gpu_ids=[0])
        ready = await client.wait_until_ready(
            launch.launch_id, on_update=lambda seen: phases.append(seen.phase)
        )
        with pytest.raises(RuntimeError):
            async with client.run("org/other", gpu_ids=[1]) as other:
                raise RuntimeError(other.launch_id)
        other_state = (await client.launches(all=True))[-1].state
        await client.stop(ready.launch_id, wait=True)
        text = "".join([chunk async for chunk in client.follow_logs(ready.launch_id)])
    assert ready.state == "ready"
    assert "loading_weights" in phases
    assert other_state == "stopped"
    assert "Application startup complete." in text


@pytest.mark.anyio
async def test_a_failed_launch_raises_with_its_log_tail(keyed: Server) -> None:
    async with AsyncClient(keyed.url, key=KEY) as client:
        launch = await client.launch("crash-on-start", gpu_ids=[0])
        with pytest.raises(LaunchFailed) as failed:
            await client.wait_until_ready(launch.launch_id, timeout=30)
    assert "stand-in crash during start-up" in failed.value.log_tail


@pytest.mark.anyio
async def test_a_batch_and_its_results(keyed: Server) -> None:
    async with AsyncClient(keyed.url, key=KEY) as client, client.run("org/model", [0]):
        line = {
            "custom_id": "only",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "org/model", "prompt": "p", "max_tokens": 1},
        }
        batch = await client.submit_batch([line], endpoint="/v1/completions")
        done = await client.wait_for_batch(batch.id)
        ids = [result["custom_id"] async for result in client.batch_results(batch.id)]
    assert (done.status, ids) == ("completed", ["only"])
