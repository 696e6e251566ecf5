"""Without an access key, only requests for a Host that names this machine are answered:
a page that points its own name at the box (DNS rebinding) is refused, whatever else its
browser says about the request."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import ServerFactory
from tests.harness import Server
from vllm_bootstrap.api.host_check import AllowedHosts, host_name
from vllm_bootstrap.config import ConfigError, load_settings

# What a browser sends from a page whose name was rebound to this machine.
REBOUND = {
    "Host": "attacker.example",
    "Origin": "http://attacker.example",
    "Sec-Fetch-Site": "same-origin",
}


def test_a_rebound_page_can_neither_read_nor_launch(server: Server) -> None:
    for method, path in [("GET", "/launch"), ("POST", "/launch"), ("GET", "/gpus")]:
        body = {"model": "org/rebound", "gpu_ids": [0]} if method == "POST" else None
        refused = server.client.request(method, path, headers=REBOUND, json=body)
        assert refused.status_code == 403, (method, path, refused.text)
        detail = refused.json()["detail"]
        assert "'attacker.example'" in detail
        assert "VLLM_BOOTSTRAP_ALLOWED_HOSTS" in detail
    assert server.client.get("/launch", params={"all": True}).json() == []
    assert "latest Host attacker.example" in server.output()


def test_a_rebound_page_gets_openai_shaped_refusals_under_v1(server: Server) -> None:
    refused = server.client.post("/v1/completions", headers=REBOUND, json={"model": "m"})
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "host_not_allowed")


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "LOCALHOST.", "dashboard.localhost", "[::1]", socket.gethostname()],
)
def test_this_machines_names_and_addresses_are_answered(server: Server, host: str) -> None:
    response = server.client.get("/health", headers={"Host": f"{host}:{server.port}"})
    assert response.status_code == 200, response.text


def test_listed_names_and_runpods_proxy_name_are_answered(start_server: ServerFactory) -> None:
    server = start_server(
        VLLM_BOOTSTRAP_ALLOWED_HOSTS="box.example, .lab.example",
        RUNPOD_POD_ID="abc123",
    )
    runpod = f"abc123-{server.port}.proxy.runpod.net"
    for host in ["box.example", "gpu1.lab.example", "lab.example", runpod]:
        assert server.client.get("/health", headers={"Host": host}).status_code == 200, host
    for host in ["box.example.attacker.example", "evillab.example", "abc123-1.proxy.runpod.net"]:
        assert server.client.get("/health", headers={"Host": host}).status_code == 403, host


def test_with_a_key_the_key_decides(start_server: ServerFactory) -> None:
    server = start_server(VLLM_ACCESS_KEY="host-key")
    headers = {**REBOUND, "Authorization": "Bearer host-key"}
    assert server.client.get("/launch", headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Example.COM:8000", "example.com"),
        ("example.com.", "example.com"),
        ("[::1]:8000", "::1"),
        ("[not-an-address]", None),
        ("a b", None),
        ("example.com:http", None),
        ("", None),
    ],
)
def test_host_names_are_read_as_browsers_write_them(header: str, name: str | None) -> None:
    assert host_name(header) == name


def test_a_star_answers_every_host() -> None:
    assert AllowedHosts(["*"]).allows(b"attacker.example")
    assert not AllowedHosts(["box.example"]).allows(b"attacker.example")


def test_a_malformed_allowed_hosts_list_stops_the_server() -> None:
    with pytest.raises(ConfigError, match="VLLM_BOOTSTRAP_ALLOWED_HOSTS must list host names"):
        load_settings({"VLLM_BOOTSTRAP_ALLOWED_HOSTS": "box.example, http://x/"})
