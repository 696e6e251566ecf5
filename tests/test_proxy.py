"""ANY /proxy/{launch_id}/{path}: a transparent, streaming reverse proxy to one launch."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.harness import Server, eventually

KEY = "proxy-key"


@pytest.fixture
def ready_launch(server: Server) -> dict[str, object]:
    return server.launch_ready(model="m", gpu_ids=[0])


def echo(server: Server, launch_id: str, method: str, path: str, **kwargs: object) -> dict:
    response = server.client.request(method, f"/proxy/{launch_id}/debug/echo{path}", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.headers["x-standin-echo"] == "1"
    return dict(response.json())


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_is_forwarded(server: Server, ready_launch: dict, method: str) -> None:
    seen = echo(server, ready_launch["launch_id"], method, "/x", content=b"payload")
    assert seen["method"] == method
    assert seen["body_length"] == 7


def test_head_is_forwarded(server: Server, ready_launch: dict) -> None:
    response = server.client.head(f"/proxy/{ready_launch['launch_id']}/debug/echo")
    assert response.status_code == 200
    assert response.headers["x-standin-echo"] == "1"
    assert response.content == b""


def test_path_and_query_string_arrive_as_sent(server: Server, ready_launch: dict) -> None:
    seen = echo(
        server, ready_launch["launch_id"], "GET", "/a%2Fb/c%20d/%E2%9C%93?x=1&y=%20z&x=2&empty="
    )
    assert seen["raw_path"] == "/debug/echo/a%2Fb/c%20d/%E2%9C%93?x=1&y=%20z&x=2&empty="


def test_headers_pass_but_hop_by_hop_ones_do_not(server: Server, ready_launch: dict) -> None:
    seen = echo(
        server,
        ready_launch["launch_id"],
        "POST",
        "",
        content=b"{}",
        headers=[
            ("Content-Type", "application/json"),
            ("X-Custom", "one"),
            ("X-Custom", "two"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic abc"),
            ("TE", "trailers"),
        ],
    )
    headers = [(name.lower(), value) for name, value in seen["headers"]]
    assert ("content-type", "application/json") in headers
    assert [value for name, value in headers if name == "x-custom"] == ["one", "two"]
    names = {name for name, _ in headers}
    assert not names & {"keep-alive", "proxy-authorization", "te"}
    host = dict(headers)["host"]
    assert host.endswith(f":{ready_launch['port']}")
    # The upstream client adds nothing of its own: only the client's headers, the upstream's
    # Host and the body's length reach vLLM.
    assert dict(headers)["user-agent"].startswith("python-httpx")
    expected = {"host", "accept", "accept-encoding", "user-agent", "content-type", "x-custom"}
    assert names == expected | {"content-length"}


def test_response_status_headers_and_body_pass_through(server: Server, ready_launch: dict) -> None:
    missing = server.client.post(
        f"/proxy/{ready_launch['launch_id']}/v1/completions", json={"model": "other"}
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "The model `other` does not exist."
    assert missing.headers["x-vllm-bootstrap-launch-id"] == ready_launch["launch_id"]
    assert len(missing.headers.get_list("date")) == 1


def test_eight_mebibyte_body(server: Server, ready_launch: dict) -> None:
    body = os.urandom(8 * 1024 * 1024)
    seen = echo(server, ready_launch["launch_id"], "POST", "", content=body)
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_request_body_streams_through(server: Server, ready_launch: dict) -> None:
    pieces = [os.urandom(256 * 1024) for _ in range(12)]

    def generate() -> Iterator[bytes]:
        yield from pieces

    seen = echo(server, ready_launch["launch_id"], "PUT", "", content=generate())
    assert seen["body_length"] == sum(map(len, pieces))
    assert seen["body_sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_server_sent_events_arrive_as_written(start_server: ServerFactory) -> None:
    server = start_server(FAKE_VLLM_TOKEN_DELAY_SECONDS="0.2")
    launch = server.launch_ready(model="m", gpu_ids=[0])
    arrivals = []
    started = time.monotonic()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with server.client.stream(
        "POST", f"/proxy/{launch['launch_id']}/v1/chat/completions", json={**body, "max_tokens": 6}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 7  # six tokens and [DONE]
    # The first event is not held back until the end of the stream.
    assert arrivals[0] < arrivals[-1] - 0.6


def test_unknown_launch_is_404(server: Server) -> None:
    response = server.client.get("/proxy/nope/v1/models")
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


def test_launch_not_ready_is_409_with_its_state(start_server: ServerFactory) -> None:
    server = start_server(FAKE_VLLM_LOAD_SECONDS="30")
    launch = server.launch(model="m", gpu_ids=[0])
    response = server.client.get(f"/proxy/{launch['launch_id']}/v1/models")
    assert response.status_code == 409
    assert "bootstrapping" in response.json()["detail"]
    server.stop(launch["launch_id"])
    response = server.client.get(f"/proxy/{launch['launch_id']}/v1/models")
    assert response.status_code == 409
    assert "stopped" in response.json()["detail"]


def test_connection_reset_by_vllm_is_502(server: Server, ready_launch: dict) -> None:
    response = server.client.get(f"/proxy/{ready_launch['launch_id']}/debug/reset")
    assert response.status_code == 502
    assert "did not answer" in response.json()["detail"]
    assert server.client.get(f"/proxy/{ready_launch['launch_id']}/health").status_code == 200


def test_connection_refused_by_vllm_is_502(server: Server, ready_launch: dict) -> None:
    launch_id = ready_launch["launch_id"]
    assert server.client.post(f"/proxy/{launch_id}/debug/stop-listening").status_code == 200

    def refused() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", int(ready_launch["port"]))) != 0  # type: ignore[call-overload]

    eventually(refused, message="stand-in kept listening")
    response = server.client.get(f"/proxy/{launch_id}/health")
    assert response.status_code == 502
    assert "Connection refused" in response.json()["detail"]


def test_vllm_dying_mid_response_does_not_hang(server: Server, ready_launch: dict) -> None:
    url = f"/proxy/{ready_launch['launch_id']}/debug/abort-mid-stream"
    with server.client.stream("GET", url) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    assert server.client.get(f"/proxy/{ready_launch['launch_id']}/health").status_code == 200


def test_access_key_never_reaches_vllm(start_server: ServerFactory) -> None:
    server = start_server(VLLM_ACCESS_KEY=KEY)
    launch = server.launch_ready(model="m", gpu_ids=[0])
    seen = echo(server, launch["launch_id"], "GET", "")
    assert KEY not in str(seen)
    assert "authorization" not in {name.lower() for name, _ in seen["headers"]}
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get(f"/proxy/{launch['launch_id']}/health").status_code == 401
        assert anonymous.post("/v1/completions", json={"model": "m"}).status_code == 401


def test_client_disconnects_stop_generation_and_leak_nothing(
    start_server: ServerFactory,
) -> None:
    server = start_server(FAKE_VLLM_TOKEN_DELAY_SECONDS="0.01")
    launch = server.launch_ready(model="m", gpu_ids=[0])
    url = f"/proxy/{launch['launch_id']}/v1/completions"
    body = {"model": "m", "prompt": "hi", "stream": True, "max_tokens": 100_000}
    assert server.process is not None

    def open_fds() -> int:
        return len(os.listdir(f"/proc/{server.process.pid}/fd"))  # type: ignore[union-attr]

    def resident_mib() -> float:
        status = Path(f"/proc/{server.process.pid}/status").read_text()  # type: ignore[union-attr]
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    def running() -> float:
        metrics = server.client.get(f"/proxy/{launch['launch_id']}/metrics").text
        line = next(line for line in metrics.splitlines() if line.startswith("vllm:num_req"))
        return float(line.rsplit(" ", 1)[1])

    for round_number in range(1000):
        hang_up_after_first_event(server.port, url, body)
        if round_number == 50:
            eventually(lambda: running() == 0, message="generation went on after hang-up")
            baseline_fds, baseline_mib = open_fds(), resident_mib()
    eventually(lambda: running() == 0, message="generation went on after hang-up")
    assert server.status(launch["launch_id"])["in_flight"] == 0  # every hang-up was counted out
    assert open_fds() <= baseline_fds + 10
    assert resident_mib() <= baseline_mib + 20
    normal = server.client.post(
        f"/proxy/{launch['launch_id']}/v1/completions", json={"model": "m", "max_tokens": 3}
    )
    assert normal.json()["choices"][0]["text"] == " tok0 tok1 tok2"


def test_hanging_up_on_a_non_streaming_request_aborts_it(start_server: ServerFactory) -> None:
    server = start_server(FAKE_VLLM_TOKEN_DELAY_SECONDS="0.01")
    launch = server.launch_ready(model="m", gpu_ids=[0])
    metrics_url = f"/proxy/{launch['launch_id']}/metrics"

    def running() -> float:
        metrics = server.client.get(metrics_url).text
        line = next(line for line in metrics.splitlines() if line.startswith("vllm:num_req"))
        return float(line.rsplit(" ", 1)[1])

    body = {"model": "m", "prompt": "hi", "max_tokens": 3000}  # 30 s of generation
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=0.5)
    eventually(lambda: running() == 0, timeout=3, message="vLLM went on generating")


def hang_up_after_first_event(port: int, path: str, body: dict[str, object]) -> None:
    payload = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request + payload)
        received = b""
        while b"data:" not in received:
            chunk = connection.recv(65536)
            assert chunk, "connection closed before the first event"
            received += chunk


def test_proxy_log_has_no_secrets(start_server: ServerFactory, tmp_path: Path) -> None:
    server = start_server(VLLM_ACCESS_KEY=KEY)
    launch = server.launch_ready(model="m", gpu_ids=[0])
    server.client.get(f"/proxy/{launch['launch_id']}/health")
    server.terminate()
    assert KEY not in server.output()
    assert all(KEY not in log.read_text() for log in (tmp_path / "logs").iterdir())
