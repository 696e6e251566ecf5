"""Attacks on the HTTP connection itself, before any route or the access key runs (issue 9):
each costs the attacker's connection, never the server's responsiveness."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from tests.conftest import ServerFactory
from tests.harness import Server

KEY = "connection-key"


def raw_exchange(server: Server, data: bytes, timeout: float = 10) -> bytes:
    """Send `data` on a fresh connection (the server may stop reading early); what came back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        # Refused part-way, the server closes: its answer was written before the close.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length (head and body may come in two writes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_huge_header_is_refused_with_431_and_costs_only_the_limit(
    start_server: ServerFactory,
) -> None:
    server = start_server(VLLM_ACCESS_KEY=KEY)
    attack = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * (20 * 1024 * 1024)
    answers: list[bytes] = []
    attacker = threading.Thread(target=lambda: answers.append(raw_exchange(server, attack)))
    attacker.start()
    attacker.join(30)
    assert len(answers) == 1
    # Refused at 64 KiB, before the key is even looked at (a parsed head would get 401).
    assert answers[0].startswith(b"HTTP/1.1 431 "), answers[0][:200]
    assert server.client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("head_size", [70_000, 100_000])
def test_a_head_over_the_limit_arriving_in_one_read_is_refused_with_431(
    start_server: ServerFactory, head_size: int
) -> None:
    server = start_server(VLLM_ACCESS_KEY=KEY)
    start = b"GET /health HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + KEY.encode()
    padding = b"\r\nX-Pad: " + b"a" * (head_size - len(start) - 14) + b"\r\n\r\n"
    # One write, one segment on loopback: the server sees a complete head in its first read.
    answer = raw_exchange(server, start + padding)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"over 65536 bytes" in answer
    assert server.client.get("/health").json()["status"] == "ok"


def test_a_request_after_a_refused_head_on_the_same_write_is_never_served(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    refused = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 70_000 + b"\r\n\r\n"
    follower = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    answer = raw_exchange(server, refused + follower)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1  # nothing after the refusal, not even a 400


@pytest.mark.parametrize(
    "padding",
    [
        b"X-A:" + b" " * 120_000 + b"a\r\n",  # whitespace the parser drops
        b"".join(b"X-%d:%s a\r\n" % (index, b" " * 1000) for index in range(100)),
        b"\r\n" * 40_000,  # blank lines before the request line are part of the head
    ],
)
def test_a_head_padded_with_what_the_parser_drops_is_measured_too(
    server: Server, padding: bytes
) -> None:
    if padding.startswith(b"\r\n"):
        request = padding + b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    else:
        request = b"GET /health HTTP/1.1\r\nHost: localhost\r\n" + padding + b"\r\n"
    answer = raw_exchange(server, request)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_a_refused_head_is_answered_after_the_requests_before_it(server: Server) -> None:
    assert server.client.put("/models/doomed", json={"model": "org/doomed"}).status_code == 200
    earlier = b"DELETE /models/doomed HTTP/1.1\r\nHost: localhost\r\n\r\n"
    oversized = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 70_000
    answer = raw_exchange(server, earlier + oversized + b"\r\n\r\n")
    # The DELETE ran and its client reads its own answer, then the refusal of the next head.
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert b'"deleted":true' in answer
    assert answer.count(b"HTTP/1.1 ") == 2
    assert b"HTTP/1.1 431 " in answer
    assert server.client.get("/models/doomed").status_code == 404


def test_blank_lines_trickled_between_requests_are_cut_off_like_a_slow_head(
    start_server: ServerFactory,
) -> None:
    server = start_server(VLLM_BOOTSTRAP_HEAD_TIMEOUT_SECONDS="1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.settimeout(0.3)
        deadline = time.monotonic() + 8  # uvicorn's keep-alive (5 s) restarts on every byte
        answer = b""
        while not answer and time.monotonic() < deadline:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"\r\n")
            with contextlib.suppress(TimeoutError):
                answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_a_head_just_under_the_limit_is_served(start_server: ServerFactory) -> None:
    server = start_server()
    request = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 60_000 + b"\r\n\r\n"
    assert raw_exchange(server, request).startswith(b"HTTP/1.1 200 ")


def test_an_unfinished_head_is_cut_off_after_the_head_timeout(start_server: ServerFactory) -> None:
    server = start_server(VLLM_BOOTSTRAP_HEAD_TIMEOUT_SECONDS="1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")  # and never the blank line
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert sock.recv(65536) == b""  # closed
    assert server.client.get("/health").status_code == 200


def test_a_silent_connection_is_closed_after_the_head_timeout(start_server: ServerFactory) -> None:
    server = start_server(VLLM_BOOTSTRAP_HEAD_TIMEOUT_SECONDS="1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")


def test_kept_alive_connections_serve_many_requests_within_the_limits(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for _ in range(20):
            sock.sendall(
                b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 40_000 + b"\r\n\r\n"
            )
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")


def test_half_sent_requests_past_the_cap_make_the_oldest_leave(
    start_server: ServerFactory,
) -> None:
    server = start_server(VLLM_BOOTSTRAP_MAX_PENDING_HEADS="5")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as established:
        established.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_response(established).startswith(b"HTTP/1.1 200 ")
        slow = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(5)]
        try:
            for sock in slow:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")  # never finished
            time.sleep(0.3)
            # A newcomer is served; the oldest half-sent request makes room for it.
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as newcomer:
                newcomer.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                assert read_response(newcomer).startswith(b"HTTP/1.1 200 ")
            assert slow[0].recv(65536).startswith(b"HTTP/1.1 408 ")
            # A connection already past its head is not held up by them.
            established.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_response(established).startswith(b"HTTP/1.1 200 ")
        finally:
            for sock in slow:
                sock.close()


def test_a_huge_head_on_a_kept_alive_connection_is_refused_too(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 200_000)
        assert sock.recv(65536).startswith(b"HTTP/1.1 431 ")


def test_a_client_without_the_key_cannot_keep_its_connection(start_server: ServerFactory) -> None:
    server = start_server(VLLM_ACCESS_KEY=KEY)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        # A body announced but never sent: after the 401 the connection is closed at once.
        sock.sendall(
            b"POST /launch HTTP/1.1\r\nHost: localhost\r\ncontent-length: 100000000\r\n\r\n{"
        )
        answer = read_response(sock)
        assert answer.startswith(b"HTTP/1.1 401 ")
        assert b"connection: close" in answer.lower()
        assert sock.recv(65536) == b""


def test_a_request_body_that_stops_arriving_is_cut_off(start_server: ServerFactory) -> None:
    server = start_server(VLLM_BOOTSTRAP_BODY_IDLE_SECONDS="1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /launch HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"model": '  # and never the rest
        )
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"no request body bytes for 1 s" in answer
    assert server.client.get("/launch").json() == []
