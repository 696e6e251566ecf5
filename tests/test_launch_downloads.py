"""Launches of Hub models: downloaded first (phase `downloading`, sharing one download per
repository), then vLLM starts on the cached files; and the cache over HTTP."""

from __future__ import annotations

from typing import Any

from tests.conftest import ServerFactory
from tests.harness import Server, eventually
from tests.hub import StandinHub
from tests.test_downloads import MIB, REPO, wait_download


def slow_repo(hub: StandinHub, size: int = 4 * MIB) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": size})
    hub.behave(bandwidth_bytes_per_second=2 * MIB)


def downloading(server: Server, launch_id: str) -> dict[str, object]:
    seen: list[dict[str, object]] = []

    def moving() -> bool:
        seen.append(server.status(launch_id))
        progress = seen[-1]["progress"]
        return seen[-1]["phase"] == "downloading" and isinstance(progress, float) and progress > 0

    eventually(moving, message="the launch showed no download progress")
    return seen[-1]


def launch_downloading(
    start_server: ServerFactory, hub: StandinHub
) -> tuple[Server, dict[str, Any], dict[str, Any]]:
    """A server, a launch of the slow repository, and its status once it downloads."""
    slow_repo(hub)
    server = start_server(**hub.env())
    launch = server.launch(model=REPO)
    return server, launch, downloading(server, launch["launch_id"])


def test_a_launch_downloads_its_model_first_and_shares_the_download(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    server, launch, status = launch_downloading(start_server, hub)
    assert status["state"] == "bootstrapping"
    assert status["pid"] is None  # vLLM waits for its files
    shared = server.client.post("/downloads", json={"model": REPO})
    assert shared.status_code == 202
    assert shared.json()["id"] == status["download_id"]
    ready = server.wait_for(launch["launch_id"], {"ready"}, timeout=30)
    assert "HF_HUB_OFFLINE" in ready["env_keys"]  # vLLM loads the cached files, asks nothing
    paths = [request["path"] for request in hub.requests()]
    assert sorted(paths) == ["config.json", "model.safetensors"]  # once, for both


def test_a_launch_whose_download_is_refused_fails_saying_why(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo("org/gated", {"config.json": b"{}"})
    hub.behave(gated=["org/gated"])
    server = start_server(**hub.env())
    launch = server.launch(model="org/gated")
    failed = server.wait_for(launch["launch_id"], {"failed"})
    assert "could not be downloaded" in failed["error"]
    assert "HF_TOKEN" in failed["error"]
    assert failed["pid"] is None


def test_a_launch_stopped_while_downloading_ends_and_its_download_goes_on(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    server, launch, status = launch_downloading(start_server, hub)
    stopped = server.stop(launch["launch_id"])
    assert stopped["state"] == "stopped"
    done = wait_download(server, str(status["download_id"]))
    assert done["state"] == "completed"


def test_a_launch_downloading_across_a_restart_resumes_and_becomes_ready(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    slow_repo(hub, 6 * MIB)
    server = start_server(**hub.env())
    launch = server.launch(model=REPO)
    download_id = downloading(server, launch["launch_id"])["download_id"]

    def weights_on_disk() -> bool:
        # Past config.json's 2 bytes: some of the weights are written, so there is
        # something to resume from.
        return server.client.get(f"/downloads/{download_id}").json()["bytes_done"] > MIB // 4

    eventually(weights_on_disk, message="no weights were written")
    server.kill()
    hub.behave()
    again = start_server(env=server.env)
    ready = again.wait_for(launch["launch_id"], {"ready"}, timeout=30)
    assert ready["download_id"] is not None
    starts = [r["start"] for r in hub.requests() if r["path"] == "model.safetensors"]
    assert starts[-1] > 0  # resumed, not fetched again


def test_a_cached_model_launches_without_a_download(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": MIB})
    server = start_server(**hub.env())
    first = server.client.post("/downloads", json={"model": REPO}).json()
    wait_download(server, first["id"])
    ready = server.launch_ready(model=REPO)
    assert ready["download_id"] is None
    assert len(server.client.get("/downloads").json()["data"]) == 1


def test_the_cache_lists_its_models_and_frees_one_no_launch_uses(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": 2 * MIB})
    server = start_server(**hub.env())
    ready = server.launch_ready(model=REPO)
    listing = server.client.get("/cache").json()
    [entry] = listing["data"]
    assert entry["model"] == REPO
    assert entry["size_on_disk"] >= 2 * MIB
    assert entry["launches"] == [ready["launch_id"]]
    assert entry["revisions"][0]["refs"] == ["main"]
    assert listing["free_bytes"] > 0

    busy = server.client.delete(f"/cache/{REPO}")
    assert busy.status_code == 409
    assert ready["launch_id"] in busy.json()["detail"]
    server.stop(ready["launch_id"])
    freed = server.client.delete(f"/cache/{REPO}")
    assert freed.status_code == 200, freed.text
    assert freed.json()["freed_bytes"] >= 2 * MIB
    assert server.client.get("/cache").json()["data"] == []
    assert server.client.delete(f"/cache/{REPO}").status_code == 404
    traversal = server.client.delete("/cache/..%2F..%2Fetc")
    assert traversal.status_code == 400
    assert "is not a Hub repository id" in traversal.json()["detail"]


def test_a_local_path_is_launched_without_asking_the_hub(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    server = start_server(**hub.env())
    folder = hub.root.parent / "local-model"
    folder.mkdir()
    ready = server.launch_ready(model=str(folder))
    assert ready["download_id"] is None
    assert hub.requests() == []


def test_a_stream_waiting_for_a_profiles_download_is_told_its_progress(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    slow_repo(hub)
    server = start_server(VLLM_BOOTSTRAP_LOAD_KEEPALIVE_SECONDS="0.2", **hub.env())
    put = server.client.put("/models/tiny", json={"model": REPO})
    assert put.status_code in (200, 201), put.text
    body = {"model": "tiny", "prompt": "x", "max_tokens": 2, "stream": True}
    with server.client.stream("POST", "/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    comments = [line for line in lines if line.startswith(":")]
    assert any(line.startswith(": loading tiny, downloading ") for line in comments), comments
    assert lines[-1] == "data: [DONE]"


def test_a_first_boot_configured_by_env_alone_downloads_then_serves_its_model(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    slow_repo(hub)
    profiles = f'[{{"name": "tiny", "model": "{REPO}", "preload": true}}]'
    server = start_server(VLLM_BOOTSTRAP_MODELS=profiles, **hub.env())

    def profile_launch() -> str | None:
        return server.client.get("/models/tiny").json()["status"]["launch_id"]

    eventually(lambda: profile_launch() is not None, message="the preload did not start")
    launch_id = str(profile_launch())
    status = downloading(server, launch_id)
    assert status["reason"] == "preload"
    [download] = server.client.get("/downloads").json()["data"]
    assert download["reason"] == f"launch {launch_id}"
    server.wait_for(launch_id, {"ready"}, timeout=30)
    answer = server.client.post(
        "/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2}
    )
    assert answer.status_code == 200


def test_offline_a_cached_model_launches_and_a_missing_one_fails_saying_so(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": MIB})
    online = start_server(**hub.env())
    wait_download(online, online.client.post("/downloads", json={"model": REPO}).json()["id"])
    online.terminate()
    asked = len(hub.requests())

    offline = start_server(env={**online.env, "HF_HUB_OFFLINE": "1"})
    ready = offline.launch_ready(model=REPO, gpu_ids=[0])
    assert ready["download_id"] is None
    missing = offline.launch(model="org/elsewhere", gpu_ids=[1])
    failed = offline.wait_for(missing["launch_id"], {"failed"})
    assert "HF_HUB_OFFLINE is set and org/elsewhere (main) is not in the cache" in failed["error"]
    assert len(hub.requests()) == asked  # the Hub was not asked anything


def test_a_download_cancelled_while_a_launch_waits_fails_the_launch(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    server, launch, status = launch_downloading(start_server, hub)
    server.client.delete(f"/downloads/{status['download_id']}")
    failed = server.wait_for(launch["launch_id"], {"failed"})
    assert "cancelled" in failed["error"]
    assert failed["pid"] is None
    assert server.client.get("/gpus").json()[0]["launch_id"] is None


def test_a_launch_with_hub_settings_of_its_own_downloads_for_itself(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": MIB})
    server = start_server(**hub.env())
    own_token = server.launch_ready(model=REPO, env={"HF_TOKEN": "hf_its_own"}, gpu_ids=[0])
    own_folder = server.launch_ready(model=REPO, extra_args=["--download-dir", "/x"], gpu_ids=[1])
    for ready in (own_token, own_folder):
        assert ready["download_id"] is None
        assert "HF_HUB_OFFLINE" not in ready["env_keys"]
    assert hub.requests() == []


def test_a_launch_stopped_while_its_restart_checks_the_cache_stops(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo("org/crash-on-start", {"config.json": b"{}", "model.safetensors": MIB})
    server = start_server(**hub.env())
    launch = server.launch(
        model="org/crash-on-start",
        # Its tokenizer named apart keeps vLLM online, so each restart looks at the Hub again.
        extra_args=["--tokenizer", "org/crash-on-start"],
        restart="on-failure",
        max_restarts=2,
        restart_backoff_seconds=0.1,
    )
    eventually(lambda: server.status(launch["launch_id"])["pid"] is not None)
    hub.behave(listing_delay_seconds=5)  # the restart's look at the Hub takes a while

    seen: list[dict[str, object]] = []

    def rechecking() -> bool:
        seen.append(server.status(launch["launch_id"]))
        return seen[-1]["restart_count"] == 1 and seen[-1]["phase"] == "downloading"

    eventually(rechecking, message="the restart did not look at the Hub again")
    assert server.status(launch["launch_id"])["pid"] is None  # the crashed one is not its own
    stopped = server.stop(launch["launch_id"])
    assert stopped["state"] == "stopped"
