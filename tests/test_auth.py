"""VLLM_ACCESS_KEY protects every route: Bearer, or Basic with any user name."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.harness import Server
from tests.test_launch import child_environ
from vllm_bootstrap.api.auth import key_from_authorization
from vllm_bootstrap.config import SETTING_VARIABLES

KEY = "s3cret-key"
ROUTES = [
    ("GET", "/health"),
    ("GET", "/launch"),
    ("POST", "/launch"),
    ("GET", "/status/x"),
    ("GET", "/logs/x"),
    ("POST", "/stop/x"),
    ("GET", "/gpus"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("GET", "/no/such/route"),
]


@pytest.fixture
def keyed(start_server: ServerFactory) -> Server:
    return start_server(VLLM_ACCESS_KEY=KEY)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "Bearer", basic("any", "wrong"), "Basic !!!", f"Token {KEY}"],
)
def test_every_route_needs_the_key(keyed: Server, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(base_url=keyed.url) as anonymous:
        for method, path in ROUTES:
            response = anonymous.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize("authorization", [f"Bearer {KEY}", basic("", KEY), basic("bob", KEY)])
def test_the_key_opens_every_route(keyed: Server, authorization: str) -> None:
    with httpx.Client(base_url=keyed.url, headers={"Authorization": authorization}) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/status/x").status_code == 404
        assert client.get("/docs").status_code == 200


def test_the_key_never_reaches_the_child(keyed: Server) -> None:
    launch = keyed.launch(model="m", gpu_ids=[0])
    environ = child_environ(launch["pid"])
    assert "VLLM_ACCESS_KEY" not in environ
    assert KEY not in environ.values()
    # None of the control plane's settings either: vLLM warns about unknown VLLM_* names.
    assert not SETTING_VARIABLES & set(environ)
    assert KEY not in keyed.output()


def test_no_key_means_open_routes(server: Server) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/launch").status_code == 200


@pytest.mark.parametrize(
    ("header", "key"),
    [
        (b"Bearer abc", b"abc"),
        (b"bearer  abc ", b"abc"),
        (b"Basic " + base64.b64encode(b"user:p:w"), b"p:w"),
        (b"Basic " + base64.b64encode(b"nocolon"), None),
        (b"Basic not-base64!", None),
        (b"Digest abc", None),
        (b"", None),
    ],
)
def test_key_from_authorization(header: bytes, key: bytes | None) -> None:
    assert key_from_authorization(header) == key


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"Sec-Fetch-Site": "cross-site"}, True),
        ({"Sec-Fetch-Site": "same-site"}, True),
        ({"Sec-Fetch-Site": "same-origin", "Origin": "https://elsewhere"}, False),
        ({"Sec-Fetch-Site": "none"}, False),
        ({"Origin": "https://evil.example"}, True),
        ({"Origin": "null"}, True),
        ({}, False),  # not a browser: scripts and SDKs send neither
    ],
)
def test_changes_a_browser_sends_from_another_site_are_refused(
    start_server: ServerFactory, headers: dict[str, str], refused: bool
) -> None:
    server = start_server(VLLM_ACCESS_KEY="csrf-key")
    response = server.client.put(
        "/models/p", json={"model": "m"}, headers={"Authorization": "Bearer csrf-key", **headers}
    )
    assert response.status_code == (403 if refused else 200), response.text
    if refused:
        assert response.json()["detail"].startswith("refused: ")
        assert (
            server.client.get(
                "/models", headers={"Authorization": "Bearer csrf-key", **headers}
            ).json()
            == []
        )  # reading is allowed; nothing was stored


def test_the_same_origin_passes_when_only_origin_is_sent(start_server: ServerFactory) -> None:
    server = start_server()
    own = f"http://127.0.0.1:{server.port}"
    assert server.client.put("/models/p", json={"model": "m"}, headers={"Origin": own}).is_success
