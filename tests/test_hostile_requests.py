"""Attacks a client can make with well-formed requests, and what holds against each (issue 9).

Each test names the attack; each fails against the code before its fix."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.harness import Server, eventually, pid_alive
from tests.test_hostile_connections import read_response


@pytest.mark.parametrize(
    "arg",
    ["--ho=0.0.0.0", "--hos", "--por=21050", "--po", "--mod=other", "--mo", "--host.x=1"],
)
def test_extra_args_cannot_rebind_vllm_with_an_abbreviated_flag(server: Server, arg: str) -> None:
    response = server.client.post(
        "/launch", json={"model": "m", "gpu_ids": [0], "extra_args": [arg]}
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert arg.split("=")[0] in detail  # the flag as the client wrote it
    assert "it would set --" in detail
    assert server.client.get("/launch").json() == []  # nothing was started


def test_flags_that_merely_start_like_a_reserved_one_are_fine(server: Server) -> None:
    launch = server.launch(
        model="m", gpu_ids=[0], extra_args=["--model-impl", "auto", "--max-model-len=4096"]
    )
    assert launch["command"][-3:] == ["--model-impl", "auto", "--max-model-len=4096"]


def test_a_percent_encoded_launch_id_matches_no_launch(server: Server) -> None:
    ready = server.launch_ready(model="m", gpu_ids=[0])
    encoded = "".join(f"%{ord(char):02X}" for char in ready["launch_id"])
    response = server.client.get(f"/proxy/{encoded}/v1/models")
    assert response.status_code == 404
    assert "no launch with id" in response.json()["detail"]
    # The plain id still forwards the path intact.
    seen = server.client.get(f"/proxy/{ready['launch_id']}/debug/echo/a%2Fb?x=1").json()
    assert seen["raw_path"] == "/debug/echo/a%2Fb?x=1"


def test_a_newline_in_a_model_name_cannot_forge_a_log_line(server: Server, tmp_path: Path) -> None:
    launch = server.launch(model="m\nFORGED: launch evil: ready", gpu_ids=[0])
    server.wait_for(launch["launch_id"], {"ready"})
    lines = server.output().splitlines()
    assert not any(line.startswith("FORGED") for line in lines)
    assert any(json.dumps("m")[1:-1] + "\\nFORGED" in line for line in lines)


def test_a_process_that_left_the_launch_group_does_not_outlive_the_stop(server: Server) -> None:
    ready = server.launch_ready(model="m-escape-group", gpu_ids=[0])
    match = re.search(r"helper left the process group: pid=(\d+)", server.logs(ready["launch_id"]))
    assert match is not None
    escaped = int(match.group(1))
    assert pid_alive(escaped)
    assert server.stop(ready["launch_id"])["state"] == "stopped"
    eventually(lambda: not pid_alive(escaped), timeout=5, message="the escaped helper lives on")
    assert "killed processes that had left its group" in server.output()


def test_a_huge_body_for_v1_is_refused_at_the_routed_body_limit(
    start_server: ServerFactory,
) -> None:
    server = start_server(VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES=str(1024 * 1024))
    server.launch_ready(model="m", gpu_ids=[0])
    prompt = "x" * (2 * 1024 * 1024)
    response = server.client.post("/v1/completions", json={"model": "m", "prompt": prompt})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    small = server.client.post("/v1/completions", json={"model": "m", "prompt": "x" * 1000})
    assert small.status_code == 200


def test_a_v1_body_declared_over_the_routed_limit_is_refused_before_it_is_sent(
    start_server: ServerFactory,
) -> None:
    server = start_server(VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES=str(1024 * 1024))
    head = (
        b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 104857600\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)  # and not one byte of the 100 MB
        answer = read_response(sock)  # its head and body may come in two writes
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert b"request_too_large" in answer


def test_a_header_the_client_names_in_connection_does_not_reach_vllm(server: Server) -> None:
    ready = server.launch_ready(model="m", gpu_ids=[0])
    response = server.client.get(
        f"/proxy/{ready['launch_id']}/debug/echo",
        headers={"Connection": "keep-alive, X-Hop-Secret", "X-Hop-Secret": "1", "X-Kept": "2"},
    )
    names = {name.lower() for name, _ in response.json()["headers"]}
    assert "x-kept" in names
    assert "x-hop-secret" not in names


@pytest.mark.parametrize("port", [22, 80, 65000])
def test_a_port_outside_the_launch_range_is_refused(server: Server, port: int) -> None:
    response = server.client.post("/launch", json={"model": "m", "gpu_ids": [0], "port": port})
    assert response.status_code == 400
    assert (
        f"port {port} is outside VLLM_LAUNCH_PORT_START..VLLM_LAUNCH_PORT_END"
        in (response.json()["detail"])
    )


def test_refused_key_attempts_are_logged_without_the_key_and_without_flooding(
    start_server: ServerFactory,
) -> None:
    server = start_server(VLLM_ACCESS_KEY="the-real-key")
    for attempt in range(50):
        response = server.client.get(
            "/health", headers={"Authorization": f"Bearer guess-{attempt}"}
        )
        assert response.status_code == 401
    lines = [line for line in server.output().splitlines() if "without a valid access key" in line]
    assert len(lines) == 1  # the first at once; the rest are counted into the next line
    assert "refused 1 request(s)" in lines[0]
    assert "guess-" not in server.output()
    assert "the-real-key" not in server.output()
