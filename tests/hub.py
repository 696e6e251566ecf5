"""The stand-in Hugging Face Hub (tests/standins/hub/server.py) as a real process, with its
repositories made on disk and its behaviours set by a file it reads at each request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.harness import STANDINS, free_port

SERVER = STANDINS / "hub" / "server.py"


class StandinHub:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> StandinHub:
        self.root.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER), "--root", str(self.root), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/_hub/requests", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the stand-in Hub did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def add_repo(self, repo: str, files: dict[str, bytes | int]) -> None:
        """Files by path: their bytes, or a size to fill with random bytes."""
        folder = self.root / repo
        for name, content in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(content) if isinstance(content, int) else content)

    def behave(self, **behaviour: Any) -> None:
        (self.root / "_hub.json").write_text(json.dumps(behaviour))

    def requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/_hub/requests", timeout=5).json())

    def env(self) -> dict[str, str]:
        """What a server needs to download from this Hub."""
        return {"HF_ENDPOINT": self.url, "VLLM_BOOTSTRAP_DOWNLOAD_MODELS": "1"}
