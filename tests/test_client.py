"""The Python client (vllm_bootstrap.client) against the real server and the stand-in vLLM,
with the access key set: launches, readiness with progress, failures with the log tail,
run() stopping on exceptions, logs, stats, profiles, batches and the openai client."""

from __future__ import annotations

import os

import pytest

from tests.conftest import ServerFactory
from tests.harness import Server
from vllm_bootstrap.client import ApiError, AsyncClient, Client, LaunchFailed
from vllm_bootstrap.client.common import LOG_TAIL_BYTES, from_a_line_start, tail_offset

KEY = "client-key"


@pytest.fixture
def keyed(start_server: ServerFactory) -> Server:
    return start_server(VLLM_ACCESS_KEY=KEY, FAKE_VLLM_LOAD_SECONDS="1.3")


@pytest.fixture
def client(keyed: Server) -> Client:
    with Client(keyed.url, key=KEY) as client:
        yield client


def test_wait_until_ready_sees_the_phases(client: Client) -> None:
    launch = client.launch("org/model", gpu_ids=[0])
    phases: list[str | None] = []
    ready = client.wait_until_ready(
        launch.launch_id, on_update=lambda seen: phases.append(seen.phase)
    )
    assert ready.state == "ready"
    assert ready.served_models == ["org/model"]
    assert phases[-1] == "ready"
    assert "loading_weights" in phases
    assert client.stop(launch.launch_id, wait=True).state == "stopped"


def test_a_failed_launch_raises_with_its_log_tail(client: Client) -> None:
    launch = client.launch("crash-on-start", gpu_ids=[0])
    with pytest.raises(LaunchFailed) as failed:
        client.wait_until_ready(launch.launch_id, timeout=30)
    assert failed.value.launch.state == "failed"
    assert "stand-in crash during start-up" in failed.value.log_tail
    log = client.logs(launch.launch_id)
    assert log.size > LOG_TAIL_BYTES  # so the tail is cut from a longer log
    whole_lines = log.content.splitlines()
    assert failed.value.log_tail.splitlines()[0] in whole_lines  # it begins at a line start


def test_run_stops_the_launch_when_the_block_raises(client: Client) -> None:
    started: list[str] = []

    def use_it_and_fail() -> None:
        with client.run("org/model", gpu_ids=[1]) as launch:
            started.append(launch.launch_id)
            raise KeyError("the user's code failed")

    with pytest.raises(KeyError):
        use_it_and_fail()
    assert client.status(started[0]).state == "stopped"


def test_logs_follow_until_the_launch_has_ended(client: Client) -> None:
    with client.run("org/model", gpu_ids=[0]) as launch:
        pass
    text = "".join(client.follow_logs(launch.launch_id))
    assert "Application startup complete." in text
    assert text == client.logs(launch.launch_id).content


def test_errors_carry_the_servers_words(client: Client, keyed: Server) -> None:
    with pytest.raises(ApiError) as unknown:
        client.status("nope")
    assert unknown.value.status == 404
    with pytest.raises(ApiError) as refused, Client(keyed.url, key="wrong") as stranger:
        stranger.stats()
    assert refused.value.status == 401


def test_stats_profiles_and_the_openai_client(client: Client) -> None:
    stats = client.stats()
    assert [gpu.index for gpu in stats.gpus] == [0, 1]
    assert stats.host.cpu_count == os.cpu_count()
    assert stats.host.memory.total_bytes
    assert stats.host.disks["state"].free_bytes is not None
    # Read as the plain dicts they once were: fields only, not the model's methods.
    assert stats.host["cpu_count"] == stats.host.get("cpu_count") == os.cpu_count()
    assert "cpu_count" in stats.host
    assert "model_dump" not in stats.host
    assert stats.host.get("no such field", "absent") == "absent"
    with pytest.raises(KeyError):
        stats.host["model_dump"]
    profile = client.put_profile("small", "org/small", idle_ttl_seconds=60)
    assert profile.status is not None
    assert profile.status.state == "not loaded"
    assert [p.name for p in client.profiles()] == ["small"]
    answer = client.openai().completions.create(model="small", prompt="hi", max_tokens=2)
    assert answer.choices[0].text == " tok0 tok1"
    assert client.profile("small").status.state == "loaded"  # type: ignore[union-attr]
    assert client.unload("small", wait=True).status.state == "not loaded"  # type: ignore[union-attr]
    client.delete_profile("small")
    assert client.profiles() == []


def test_a_batch_from_request_lines_and_its_results_by_custom_id(client: Client) -> None:
    with client.run("org/model", gpu_ids=[0]):
        lines = [
            {
                "custom_id": f"r{index}",
                "method": "POST",
                "url": "/v1/completions",
                "body": {"model": "org/model", "prompt": f"p{index}", "max_tokens": 1},
            }
            for index in range(5)
        ]
        batch = client.submit_batch(lines, endpoint="/v1/completions")
        seen: list[int] = []
        done = client.wait_for_batch(batch.id, lambda b: seen.append(b.request_counts.completed))
        assert done.status == "completed"
        assert done.is_ended
        assert seen[-1] == 5
        # A script written when batches were dicts reads them as before.
        assert done["request_counts"]["completed"] == done.request_counts.completed == 5
        results = {line["custom_id"]: line for line in client.batch_results(batch.id)}
    assert sorted(results) == [f"r{index}" for index in range(5)]
    assert results["r0"]["response"]["status_code"] == 200


def test_a_failed_batch_says_why_line_by_line(client: Client) -> None:
    lines = [
        {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"model": "x"}},
        {"custom_id": "b", "method": "DELETE", "url": "/v1/completions", "body": {"model": "x"}},
    ]
    failed = client.wait_for_batch(client.submit_batch(lines, endpoint="/v1/completions").id)
    assert failed.status == "failed"
    assert failed.errors is not None
    assert failed.errors.data[0].line == 2
    assert failed.error_lines[0].startswith("line 2: ")


def test_a_log_tail_starts_at_a_line_start_or_says_it_was_cut() -> None:
    log = "first line\n" + "x" * LOG_TAIL_BYTES + "\nlast line\n"
    offset = tail_offset(len(log))
    assert from_a_line_start(log[offset:], offset) == "last line\n"
    # The tail read begins exactly at a line start: that line is kept whole.
    log = "a" * 10 + "\n" + "b" * (LOG_TAIL_BYTES - 1) + "\n"
    offset = tail_offset(len(log))
    assert from_a_line_start(log[offset:], offset) == "b" * (LOG_TAIL_BYTES - 1) + "\n"
    # A last line longer than the tail: its end, marked as cut, not nothing.
    log = "first line\n" + "y" * (2 * LOG_TAIL_BYTES) + "\n"
    offset = tail_offset(len(log))
    assert from_a_line_start(log[offset:], offset) == "…" + "y" * (LOG_TAIL_BYTES - 1) + "\n"
    assert from_a_line_start("short log\n", tail_offset(10)) == "short log\n"


def test_the_openai_clients_argument_names_are_understood(keyed: Server) -> None:
    with Client(base_url=keyed.url, api_key=KEY) as client:
        assert client.url == keyed.url
        assert [gpu.index for gpu in client.stats().gpus] == [0, 1]
    # The openai client's base_url ends in /v1: the same server.
    with Client(base_url=f"{keyed.url}/v1/", api_key=KEY) as client:
        assert client.url == keyed.url
        assert client.stats().host.cpu_count >= 1


@pytest.mark.anyio
async def test_the_async_client_understands_the_openai_names_too(keyed: Server) -> None:
    async with AsyncClient(base_url=f"{keyed.url}/v1", api_key=KEY) as client:
        assert client.url == keyed.url
        assert [gpu.index for gpu in (await client.stats()).gpus] == [0, 1]
    with pytest.raises(TypeError, match="not both"):
        Client(keyed.url, base_url=keyed.url)
