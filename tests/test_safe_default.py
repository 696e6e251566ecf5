"""A server never runs open by accident: without VLLM_ACCESS_KEY it listens on loopback,
and told to listen beyond it, it makes an admin key (kept 0600, printed once) unless
VLLM_BOOTSTRAP_NO_KEY=1 says an open server is wanted."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Server, standin_env
from vllm_bootstrap.keys import is_loopback

KEY_LINE = re.compile(r"^\s+(vbk_\S+)$", re.MULTILINE)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.terminate()
        server.client.close()


def listening_everywhere(env: dict[str, str], log: Path, started: list[Server]) -> Server:
    server = Server(env, log)
    server.host = "0.0.0.0"
    started.append(server.start())
    return server


def test_beyond_loopback_without_a_key_an_admin_key_is_made_kept_and_shown_once(
    tmp_path: Path, servers: list[Server]
) -> None:
    env = standin_env(tmp_path)
    first = listening_everywhere(env, tmp_path / "first.log", servers)
    key_file = tmp_path / "state" / "admin-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert KEY_LINE.findall(first.output()) == [key]
    assert "Authorization: Bearer" in first.output()
    assert first.client.get("/health").status_code == 401
    with httpx.Client(base_url=first.url, headers={"Authorization": f"Bearer {key}"}) as admin:
        assert admin.get("/health").status_code == 200
        assert admin.get("/launch").status_code == 200
    first.terminate()

    again = listening_everywhere(env, tmp_path / "again.log", servers)
    assert key not in again.output()  # shown once, at its making only
    assert str(key_file) in again.output()
    with httpx.Client(base_url=again.url, headers={"Authorization": f"Bearer {key}"}) as admin:
        assert admin.get("/launch").status_code == 200


def test_no_key_set_on_purpose_leaves_the_server_open_with_a_warning(
    tmp_path: Path, servers: list[Server]
) -> None:
    env = standin_env(tmp_path, VLLM_BOOTSTRAP_NO_KEY="1")
    server = listening_everywhere(env, tmp_path / "open.log", servers)
    assert server.client.get("/launch").status_code == 200
    assert "no access key (VLLM_BOOTSTRAP_NO_KEY=1)" in server.output()
    assert not (tmp_path / "state" / "admin-key").exists()


def test_public_health_answers_a_bare_liveness_reply_without_the_key(
    tmp_path: Path, servers: list[Server]
) -> None:
    env = standin_env(tmp_path, VLLM_ACCESS_KEY="k", VLLM_BOOTSTRAP_PUBLIC_HEALTH="1")
    server = Server(env, tmp_path / "health.log")
    servers.append(server.start())
    with httpx.Client(base_url=server.url) as anonymous:
        health = anonymous.get("/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        assert anonymous.get("/launch").status_code == 401
        assert anonymous.get("/gpus").status_code == 401
    assert "live_launches" in server.client.get("/health").json()  # with the key: all of it


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_loopback_addresses_are_told_apart(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
