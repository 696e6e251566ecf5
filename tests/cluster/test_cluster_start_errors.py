"""A head or a worker that cannot run Ray stops at start-up saying why (in the fast suite:
no network namespaces are needed to fail)."""

from __future__ import annotations

import importlib.util
import socket

import pytest

from tests.conftest import ServerFactory
from vllm_bootstrap.cli import serve


def test_a_head_whose_ray_node_cannot_start_says_why(start_server: ServerFactory) -> None:
    with pytest.raises(RuntimeError) as failed:
        start_server(
            VLLM_ACCESS_KEY="k",
            VLLM_BOOTSTRAP_RAY_HEAD="1",
            VLLM_BOOTSTRAP_RAY_START_ARGS="--no-such-option",
        )
    assert "the Ray head node could not start: its log" in str(failed.value)
    assert "No such option '--no-such-option'" in str(failed.value)


def test_a_cluster_role_without_ray_installed_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "ray" else real_find_spec(name)
    )
    with pytest.raises(SystemExit) as stopped:
        serve.check_cluster_extra(wanted=True)
    assert stopped.value.code == 2
    assert "pip install 'vllm-bootstrap[cluster]'" in capsys.readouterr().err
    serve.check_cluster_extra(wanted=False)  # a box alone needs no Ray


def test_a_head_whose_ray_port_is_taken_says_so(start_server: ServerFactory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError) as failed:
            start_server(
                VLLM_ACCESS_KEY="k", VLLM_BOOTSTRAP_RAY_HEAD="1", VLLM_BOOTSTRAP_RAY_PORT=str(port)
            )
    assert f"VLLM_BOOTSTRAP_RAY_PORT {port} is in use on this box" in str(failed.value)
