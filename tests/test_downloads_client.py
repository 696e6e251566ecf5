"""Downloads and the model cache through the Python clients and the command line, against
the real server and the stand-in Hub (HF_ENDPOINT) with the access key set: a model pulled
with progress, listed in the cache with who uses it, refused removal while in use, removed;
a download cancelled; the Hub's and the server's refusals in their own words."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.harness import Server
from tests.hub import StandinHub
from tests.test_cli import KEY, cli
from tests.test_downloads import MIB, REPO
from vllm_bootstrap.client import ApiError, AsyncClient, Client, Download

WEIGHTS = 4 * MIB


@pytest.fixture
def keyed(start_server: ServerFactory, hub: StandinHub) -> Server:
    """A server that downloads from the stand-in Hub, which holds REPO (config and 4 MiB of
    weights) and sends 2 MiB/s: a pull takes about two seconds, long enough to be watched."""
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": WEIGHTS})
    hub.behave(bandwidth_bytes_per_second=2 * MIB)
    return start_server(VLLM_ACCESS_KEY=KEY, **hub.env())


@pytest.fixture
def client(keyed: Server) -> Iterator[Client]:
    with Client(keyed.url, key=KEY) as client:
        yield client


def test_a_download_is_watched_to_completion_listed_cached_and_removed(client: Client) -> None:
    started = client.download(REPO)
    assert (started.model, started.revision, started.state) == (REPO, "main", "downloading")
    seen: list[Download] = []
    done = client.wait_for_download(started.id, timeout=30, on_update=seen.append)
    assert done.state == "completed", done
    assert (done.bytes_done, done.files_done) == (done.bytes_total, 2)
    assert done.bytes_total == WEIGHTS + 2
    moving = [item for item in seen if 0 < item.bytes_done < item.bytes_total]
    assert moving, "no progress was seen"
    assert any(item.bytes_per_second and item.eta_seconds for item in moving)
    assert [item.id for item in client.downloads()] == [started.id]
    assert client.get_download(started.id) == done

    cache = client.cache()
    [entry] = cache.data
    assert (entry.model, entry.launches, entry.profiles, entry.downloading) == (REPO, [], [], False)
    assert entry.size_on_disk >= WEIGHTS
    assert entry.revisions[0].refs == ["main"]
    assert (cache.free_bytes or 0) > 0
    removed = client.remove_from_cache(REPO)
    assert (removed.model, removed.deleted) == (REPO, True)
    assert removed.freed_bytes >= WEIGHTS
    assert client.cache().data == []
    with pytest.raises(ApiError) as gone:
        client.remove_from_cache(REPO)
    assert gone.value.status == 404


def test_the_hubs_and_the_servers_refusals_are_api_errors_in_their_words(client: Client) -> None:
    with pytest.raises(ApiError) as unknown:
        client.download("org/nowhere")
    assert unknown.value.status == 404
    assert "org/nowhere was not found on the Hub" in unknown.value.detail
    with pytest.raises(ApiError) as revision:
        client.download(REPO, revision="v9")
    assert (revision.value.status, "no revision 'v9'" in revision.value.detail) == (404, True)
    with pytest.raises(ApiError) as no_such:
        client.get_download("nope")
    assert no_such.value.status == 404
    # Dot segments would be resolved by the HTTP client into another route (DELETE /keys/x).
    with pytest.raises(ValueError, match=r"'\.\.' part"):
        client.remove_from_cache("../keys/key_1")
    assert client.downloads() == []


async def under_way(client: AsyncClient, download_id: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (await client.get_download(download_id)).bytes_done == 0:
        assert time.monotonic() < deadline, "the download did not get going"
        await asyncio.sleep(0.02)


@pytest.mark.anyio
async def test_the_async_client_cancels_a_download_the_cache_would_not_remove(
    keyed: Server, hub: StandinHub
) -> None:
    hub.behave(bandwidth_bytes_per_second=MIB // 2)  # eight seconds: time to cancel it
    async with AsyncClient(keyed.url, key=KEY) as client:
        started = await client.download(REPO)
        await under_way(client, started.id)
        with pytest.raises(ApiError) as busy:
            await client.remove_from_cache(REPO)
        assert busy.value.status == 409
        assert "being downloaded" in busy.value.detail
        assert [entry.downloading for entry in (await client.cache()).data] == [True]
        await client.cancel_download(started.id)
        done = await client.wait_for_download(started.id, timeout=30)
        listed = await client.downloads()
    assert done.state == "cancelled"
    assert done.bytes_done < done.bytes_total
    assert [(item.id, item.state) for item in listed] == [(started.id, "cancelled")]


def test_models_pull_waits_with_a_progress_bar_then_cache_ls_shows_it_and_rm_frees_it(
    keyed: Server,
) -> None:
    pulled = cli(keyed, "models", "pull", REPO, "--wait")
    download_id = pulled.stdout.split()[0]
    assert pulled.stdout.strip() == f"{download_id} completed {REPO}@main (2 files, 4.0 MiB)"
    progress = pulled.stderr.splitlines()
    assert any("MiB/s, " in line and "s left" in line and "#" in line for line in progress)
    assert progress[-1].endswith(f"[{'#' * 30}] 4.0 MiB / 4.0 MiB, 2/2 files")
    assert progress[-1].startswith(f"{download_id} completed")
    again = cli(keyed, "models", "pull", REPO).stdout
    assert again.endswith(f" completed {REPO}@main (cached already)\n")

    # Used by a launch and named by a profile: both shown, and the removal refused.
    assert keyed.client.put("/models/tiny", json={"model": REPO}).status_code in (200, 201)
    launch_id = keyed.launch_ready(model=REPO)["launch_id"]
    path, header, row = cli(keyed, "cache", "ls").stdout.splitlines()
    assert path.startswith(f"{Path(keyed.env['HF_HOME']) / 'hub'}: ")
    assert path.endswith(" free")
    assert header.split()[:4] == ["MODEL", "SIZE", "REVISIONS", "USED"]
    assert row.split()[:3] == [REPO, "4.0", "MiB"]
    assert f"launch {launch_id}, profile tiny" in row
    listed = json.loads(cli(keyed, "cache", "ls", "--json").stdout)
    assert cli(keyed, "cache", "ls", "-q").stdout == f"{REPO}\n"
    assert listed["data"][0]["launches"] == [launch_id]
    refused = cli(keyed, "cache", "rm", REPO, check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("vllm-bootstrap: the server answered 409: ")
    assert launch_id in refused.stderr

    keyed.stop(launch_id)
    assert cli(keyed, "cache", "rm", REPO).stdout.strip() == f"{REPO} removed, 4.0 MiB freed"
    assert cli(keyed, "cache", "ls").stdout.splitlines()[1:] == ["no models cached"]


def test_models_pull_errors_are_the_servers_words_and_a_failed_pull_exits_non_zero(
    start_server: ServerFactory, hub: StandinHub
) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": 6 * MIB})
    # The server's files may not grow past 2 MiB: the weights' write fails as on a full disk.
    server = start_server(VLLM_ACCESS_KEY=KEY, STANDIN_FILE_SIZE_LIMIT=str(2 * MIB), **hub.env())
    unknown = cli(server, "models", "pull", "org/nowhere", check=False)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("vllm-bootstrap: the server answered 404: org/nowhere was")
    failed = cli(server, "models", "pull", REPO, "--wait", check=False)
    assert failed.returncode == 1
    download_id = failed.stdout.split()[0]
    assert failed.stdout.startswith(f"{download_id} failed {REPO}@main")
    assert failed.stderr.splitlines()[-1] == (
        f"vllm-bootstrap: download {download_id} of {REPO} ended failed: "
        f"{server.client.get(f'/downloads/{download_id}').json()['error']}"
    )
    assert "the disk filled" in failed.stderr
    again = json.loads(cli(server, "models", "pull", REPO, "--json").stdout)
    assert (again["model"], again["state"]) == (REPO, "downloading")
