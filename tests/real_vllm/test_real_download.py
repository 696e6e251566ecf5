"""First boot against a real vLLM, with an empty cache: a profile of the tiny model, served
by the stand-in Hub, goes download -> load -> chat through /v1, and its launch shows phase
`downloading` with progress on the way."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import openai
import pytest

from tests.harness import Server
from tests.hub import StandinHub
from tests.real_vllm import build_env
from tests.real_vllm.test_real_vllm import STARTUP_TIMEOUT, VLLM_FLAGS

pytestmark = [pytest.mark.real_vllm, pytest.mark.timeout(900)]
REPO = "org/tiny-llama"


def test_a_profile_of_a_hub_model_downloads_loads_and_chats(
    tmp_path: Path, hub: StandinHub
) -> None:
    if not build_env.is_built():
        pytest.fail(f"the real-vLLM environment is not built at {build_env.cache_root()}")
    shutil.copytree(build_env.model_dir(), hub.root / REPO)
    # Slow enough that the download is seen, whatever this machine's speed.
    size = sum(path.stat().st_size for path in (hub.root / REPO).iterdir())
    hub.behave(bandwidth_bytes_per_second=size // 3)
    env = build_env.server_env(
        tmp_path, gpus=1, VLLM_STARTUP_TIMEOUT_SECONDS=str(STARTUP_TIMEOUT), **hub.env()
    )
    server = Server(env, tmp_path / "server.log").start()
    try:
        body = {"model": REPO, "extra_args": VLLM_FLAGS}
        assert server.client.put("/models/tiny", json=body).status_code == 200
        phases = _watch_phases(server)
        client = openai.OpenAI(
            base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=600
        )
        answer = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
        )
        assert answer.choices[0].finish_reason in ("length", "stop")
        phases.stop.set()
        phases.join()
        downloading = [progress for phase, progress in phases.seen if phase == "downloading"]
        assert any(progress is not None and 0 < progress < 1 for progress in downloading)
        assert phases.seen[-1][0] in ("ready", "starting_server", "loading_weights")
        launch = server.status(server.client.get("/models/tiny").json()["status"]["launch_id"])
        download = server.client.get(f"/downloads/{launch['download_id']}").json()
        assert download["state"] == "completed"
        assert download["files_done"] == download["files_total"] == 6
    finally:
        server.terminate(timeout=120)
        server.client.close()


class _PhaseWatch(threading.Thread):
    """Reads the profile's launch phase while the request waits for it."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.seen: list[tuple[str, float | None]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            status = self.server.client.get("/models/tiny").json()["status"]
            if status["launch_id"]:
                launch = self.server.status(status["launch_id"])
                self.seen.append((launch["phase"], launch["progress"]))


def _watch_phases(server: Server) -> _PhaseWatch:
    watch = _PhaseWatch(server)
    watch.start()
    return watch
