"""Downloads over HTTP: POST, GET, DELETE /downloads against a stand-in Hub (HF_ENDPOINT),
with progress, the Hub's refusals, the disk check, dropped connections and restarts."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from tests.conftest import ServerFactory
from tests.harness import Server, eventually
from tests.hub import StandinHub

MIB = 1024 * 1024
REPO = "org/tiny"
# A repository as the Hub has them: sharded safetensors with their index, the same weights
# again as .bin, Meta's original checkpoint, a consolidated copy, a README.
TINY_REPO: dict[str, bytes | int] = {
    "config.json": b'{"architectures": ["LlamaForCausalLM"]}',
    "generation_config.json": b"{}",
    "tokenizer.json": b"{}",
    "tokenizer_config.json": b"{}",
    "model-00001-of-00002.safetensors": 2 * MIB,
    "model-00002-of-00002.safetensors": MIB + 17,
    "model.safetensors.index.json": b"{}",
    "pytorch_model.bin": 3 * MIB,
    "pytorch_model.bin.index.json": b"{}",
    "consolidated.safetensors": 3 * MIB,
    "original/consolidated.00.pth": 3 * MIB,
    "README.md": b"# tiny",
}
WANTED = {
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
}


def wait_download(server: Server, download_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        download = server.client.get(f"/downloads/{download_id}").json()
        if download["state"] in ("completed", "failed", "cancelled"):
            return dict(download)
        assert time.monotonic() < deadline, download
        time.sleep(0.05)


def snapshot_files(server: Server, repo: str) -> set[str]:
    folder = Path(server.env["HF_HOME"]) / "hub" / f"models--{repo.replace('/', '--')}"
    snapshots = folder / "snapshots"
    if not snapshots.is_dir():
        return set()
    return {
        path.relative_to(commit).as_posix()
        for commit in snapshots.iterdir()
        for path in commit.rglob("*")
        if path.is_file()
    }


def assert_cached_intact(
    server: Server, hub: StandinHub, where: str = "*/model.safetensors"
) -> None:
    """The weights in the server's cache are the Hub's, byte for byte."""
    snapshots = Path(server.env["HF_HOME"]) / "hub" / "models--org--tiny" / "snapshots"
    [weights] = snapshots.glob(where)
    assert weights.read_bytes() == (hub.root / REPO / "model.safetensors").read_bytes()


def test_a_download_fetches_only_the_files_vllm_loads_and_shows_its_progress(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo(REPO, TINY_REPO)
    hub.behave(bandwidth_bytes_per_second=3 * MIB)
    server = start_server(**hub.env())

    response = server.client.post("/downloads", json={"model": REPO})
    assert response.status_code == 202, response.text
    download = response.json()
    assert download["state"] == "downloading"
    assert download["files_total"] == len(WANTED)
    wanted_bytes = sum(
        len(c) if isinstance(c, bytes) else c for n, c in TINY_REPO.items() if n in WANTED
    )
    assert download["bytes_total"] == wanted_bytes
    seen: list[dict[str, Any]] = []

    def moving() -> bool:
        seen.append(server.client.get(f"/downloads/{download['id']}").json())
        latest = seen[-1]
        return bool(latest["bytes_per_second"]) and 0 < latest["bytes_done"] < wanted_bytes

    eventually(moving, timeout=10, message="no progress was shown")
    metrics = server.client.get("/metrics").text
    assert f'vllm_bootstrap_download_bytes_total{{model="{REPO}",revision="main"}} ' in metrics
    assert seen[-1]["eta_seconds"] > 0
    assert seen[-1]["progress"] == round(seen[-1]["bytes_done"] / wanted_bytes, 4)
    done = wait_download(server, download["id"])
    assert done["state"] == "completed", done
    assert (done["bytes_done"], done["files_done"]) == (wanted_bytes, len(WANTED))
    assert snapshot_files(server, REPO) == WANTED
    assert {request["path"] for request in hub.requests()} == WANTED
    listed = server.client.get("/downloads").json()["data"]
    assert [item["id"] for item in listed] == [download["id"]]


def test_a_cached_model_is_not_fetched_again(start_server: ServerFactory, hub: StandinHub) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": MIB})
    server = start_server(**hub.env())
    first = server.client.post("/downloads", json={"model": REPO}).json()
    assert wait_download(server, first["id"])["state"] == "completed"
    again = server.client.post("/downloads", json={"model": REPO})
    assert again.status_code == 202
    assert again.json()["state"] == "completed"
    assert again.json()["id"] != first["id"]
    assert again.json()["cached"] is True
    assert again.json()["bytes_done"] == again.json()["bytes_total"] == MIB + 2
    assert again.json()["files_done"] == again.json()["files_total"] == 2
    assert len(hub.requests()) == 2  # the two files, once


def test_the_hubs_refusals_say_what_to_do(start_server: ServerFactory, hub: StandinHub) -> None:
    hub.add_repo("org/gated", {"config.json": b"{}"})
    hub.behave(gated=["org/gated"], tokens=["hf_good"])
    server = start_server(**hub.env())

    gated = server.client.post("/downloads", json={"model": "org/gated"})
    assert gated.status_code == 403
    assert "HF_TOKEN" in gated.json()["detail"]
    unknown = server.client.post("/downloads", json={"model": "org/nowhere"})
    assert unknown.status_code == 404
    assert "org/nowhere was not found on the Hub" in unknown.json()["detail"]
    revision = server.client.post("/downloads", json={"model": "org/gated", "revision": "v9"})
    assert revision.status_code == 403  # gated first, as the Hub answers
    malformed = server.client.post("/downloads", json={"model": "../etc/passwd"})
    assert malformed.status_code == 400
    assert "not a Hub repository id" in malformed.json()["detail"]
    assert server.client.get("/downloads").json()["data"] == []
    assert hub.requests() == []


def test_a_token_opens_a_gated_repo_and_an_unknown_revision_is_named(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo("org/gated", {"config.json": b"{}"})
    hub.behave(gated=["org/gated"], tokens=["hf_good"])
    server = start_server(HF_TOKEN="hf_good", **hub.env())

    revision = server.client.post("/downloads", json={"model": "org/gated", "revision": "v9"})
    assert revision.status_code == 404
    assert "no revision 'v9'" in revision.json()["detail"]
    opened = server.client.post("/downloads", json={"model": "org/gated"})
    assert opened.status_code == 202
    assert wait_download(server, opened.json()["id"])["state"] == "completed"


def test_offline_nothing_is_downloaded_and_a_missing_model_says_so(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo(REPO, {"config.json": b"{}"})
    server = start_server(HF_HUB_OFFLINE="1", **hub.env())
    response = server.client.post("/downloads", json={"model": REPO})
    assert response.status_code == 409
    assert "HF_HUB_OFFLINE" in response.json()["detail"]
    assert "not in the cache" in response.json()["detail"]
    assert hub.requests() == []


def test_a_model_larger_than_the_disk_is_refused_before_a_byte_is_written(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo("org/huge", {"config.json": b"{}", "model.safetensors": MIB})
    hub.behave(declared_sizes={"org/huge": 10**16})
    server = start_server(**hub.env())
    response = server.client.post("/downloads", json={"model": "org/huge"})
    assert response.status_code == 507
    detail = response.json()["detail"]
    assert "org/huge needs" in detail
    assert "free" in detail
    assert str(2 * 10**16) in detail  # what it needs, in bytes, beside what the disk has
    assert hub.requests() == []
    assert snapshot_files(server, "org/huge") == set()


def test_a_dropped_connection_is_resumed_from_where_it_broke(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": 3 * MIB})
    hub.behave(drop_after_bytes=MIB)
    server = start_server(**hub.env())
    download = server.client.post("/downloads", json={"model": REPO}).json()
    assert wait_download(server, download["id"])["state"] == "completed"
    starts = [r["start"] for r in hub.requests() if r["path"] == "model.safetensors"]
    assert starts[0] == 0
    assert starts[1] >= MIB // 2  # the retry asked for the rest, not the whole file
    assert_cached_intact(server, hub)


def test_a_restart_mid_download_resumes_from_the_bytes_on_disk(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": 4 * MIB})
    hub.behave(bandwidth_bytes_per_second=2 * MIB)
    server = start_server(**hub.env())
    download = server.client.post("/downloads", json={"model": REPO}).json()
    eventually(
        lambda: server.client.get(f"/downloads/{download['id']}").json()["bytes_done"] > MIB,
        message="the download did not get going",
    )
    server.kill()  # kill -9: nothing is tidied up
    hub.behave()
    again = start_server(env=server.env)
    done = wait_download(again, download["id"])
    assert done["state"] == "completed", done
    starts = [r["start"] for r in hub.requests() if r["path"] == "model.safetensors"]
    assert starts[0] == 0
    assert starts[-1] > MIB // 2
    assert_cached_intact(server, hub)


def test_a_cancelled_download_stops_and_leaves_no_partial_file(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": 8 * MIB})
    hub.behave(bandwidth_bytes_per_second=MIB)
    server = start_server(**hub.env())
    download = server.client.post("/downloads", json={"model": REPO}).json()
    eventually(lambda: server.client.get(f"/downloads/{download['id']}").json()["bytes_done"] > 0)
    cancelled = server.client.delete(f"/downloads/{download['id']}")
    assert cancelled.status_code == 200
    done = wait_download(server, download["id"])
    assert done["state"] == "cancelled"
    blobs = Path(server.env["HF_HOME"]) / "hub" / "models--org--tiny" / "blobs"
    assert not [path for path in blobs.iterdir() if path.name.endswith(".vllm-bootstrap")]
    assert "model.safetensors" not in snapshot_files(server, REPO)
    assert server.client.delete("/downloads/nope").status_code == 404


def test_a_disk_that_fills_anyway_fails_the_download_and_keeps_nothing_partial(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": 6 * MIB})
    # The server's files may not grow past 2 MiB (RLIMIT_FSIZE): the write fails as it
    # would on a full disk, after the disk check let it start.
    server = start_server(STANDIN_FILE_SIZE_LIMIT=str(2 * MIB), **hub.env())
    download = server.client.post("/downloads", json={"model": REPO}).json()
    done = wait_download(server, download["id"])
    assert done["state"] == "failed"
    assert "the disk filled while model.safetensors was written" in done["error"]
    blobs = Path(server.env["HF_HOME"]) / "hub" / "models--org--tiny" / "blobs"
    assert [path.name for path in blobs.iterdir() if path.name.endswith(".vllm-bootstrap")] == []
    assert [path.name for path in blobs.iterdir() if path.stat().st_size > 2 * MIB - 1] == []
    assert "model.safetensors" not in snapshot_files(server, REPO)


def test_a_listing_that_would_write_outside_the_cache_is_refused_whole(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo("org/evil", {"config.json": b"{}"})
    hub.behave(unsafe_listing=["org/evil"])
    server = start_server(**hub.env())
    response = server.client.post("/downloads", json={"model": "org/evil"})
    assert response.status_code == 502
    assert "blob id ../../escaped that is not safe" in response.json()["detail"]
    assert hub.requests() == []
    home = Path(server.env["HF_HOME"])
    assert not list(home.rglob("escaped*"))


def test_a_revision_that_would_leave_the_refs_folder_is_a_400(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo(REPO, {"config.json": b"{}"})
    for offline in ("0", "1"):
        server = start_server(HF_HUB_OFFLINE=offline, **hub.env())
        for revision in ("../../../etc/hostname", ".", "a//b", "x\x00"):
            body = {"model": REPO, "revision": revision}
            response = server.client.post("/downloads", json=body)
            assert response.status_code == 400, (offline, revision, response.text)
            assert response.json()["detail"].endswith("without empty, '.' or '..' parts")
        server.terminate()
    assert hub.requests() == []


def test_two_revisions_sharing_a_blob_take_turns_and_a_cancel_spares_the_other(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": 6 * MIB})
    hub.behave(bandwidth_bytes_per_second=3 * MIB)
    server = start_server(**hub.env())
    commit = hashlib.sha1(f"commit of {REPO}".encode()).hexdigest()  # the stand-in's
    by_branch = server.client.post("/downloads", json={"model": REPO}).json()
    by_commit = server.client.post("/downloads", json={"model": REPO, "revision": commit}).json()
    assert by_branch["id"] != by_commit["id"]
    eventually(lambda: server.client.get(f"/downloads/{by_branch['id']}").json()["bytes_done"] > 0)
    server.client.delete(f"/downloads/{by_branch['id']}")
    assert wait_download(server, by_branch["id"])["state"] == "cancelled"
    done = wait_download(server, by_commit["id"])
    assert done["state"] == "completed", done
    assert_cached_intact(server, hub, f"{commit}/model.safetensors")


def test_a_passing_refusal_from_the_hub_is_tried_again(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": MIB})
    hub.behave(refuse_first_get=503)
    server = start_server(**hub.env())
    download = server.client.post("/downloads", json={"model": REPO}).json()
    assert wait_download(server, download["id"])["state"] == "completed"
    paths = sorted(request["path"] for request in hub.requests())
    assert paths == ["config.json", "config.json", "model.safetensors", "model.safetensors"]
