"""What the Files and Batches API does with bad or hostile input: a clear 4xx in OpenAI's
shape that says what to fix, nothing half-written left behind, memory that stays flat."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.batch_helpers import chat_line, client_for, jsonl, raw_upload, submit, wait_for_batch
from tests.harness import Server, eventually


def _files_dir(server: Server) -> Path:
    return Path(server.env["VLLM_BOOTSTRAP_STATE_DIR"]) / "files"


def _error(response) -> dict:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def test_an_upload_that_is_not_multipart_is_refused(server: Server) -> None:
    response = server.client.post("/v1/files", content=b"{}", headers={"content-type": "text/x"})
    assert response.status_code == 400
    assert "multipart/form-data" in _error(response)["message"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [({}, "no `purpose` field"), ({"purpose": "fine-tune"}, "use purpose=batch")],
)
def test_an_upload_without_the_batch_purpose_is_refused(
    server: Server, data: dict, expected: str
) -> None:
    response = server.client.post("/v1/files", files={"file": ("a.jsonl", b"{}\n")}, data=data)
    assert response.status_code == 400
    assert expected in _error(response)["message"]
    assert list(_files_dir(server).iterdir()) == []


def test_a_form_without_a_file_is_refused(server: Server) -> None:
    response = server.client.post(
        "/v1/files", files={"other": (None, b"x")}, data={"purpose": "batch"}
    )
    assert response.status_code == 400
    assert "no `file` field" in _error(response)["message"]


def test_a_malformed_multipart_body_is_refused(server: Server) -> None:
    response = server.client.post(
        "/v1/files",
        content=b"--b\r\nnonsense without headers\r\n\r\n",
        headers={"content-type": "multipart/form-data; boundary=zzz"},
    )
    assert response.status_code == 400
    assert list(_files_dir(server).iterdir()) == []


def test_an_upload_without_its_closing_boundary_is_refused(server: Server) -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
        b'{"custom_id": "a"}\n'  # and no "--b--": the sender stopped early
    )
    response = server.client.post(
        "/v1/files", content=body, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 400
    assert "closing boundary" in _error(response)["message"]
    assert list(_files_dir(server).iterdir()) == []


def test_an_overlong_boundary_is_refused(server: Server) -> None:
    response = server.client.post(
        "/v1/files",
        content=b"x",
        headers={"content-type": "multipart/form-data; boundary=" + "b" * 300},
    )
    assert response.status_code == 400
    assert "malformed multipart" in _error(response)["message"]


def test_an_oversized_form_field_is_refused(server: Server) -> None:
    response = server.client.post(
        "/v1/files", files={"file": ("a", b"{}")}, data={"purpose": "b" * 5000}
    )
    assert response.status_code == 400
    assert "over 1024 bytes" in _error(response)["message"]


def test_an_upload_cut_off_midway_leaves_no_file(server: Server) -> None:
    boundary = "cutoff"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=" + boundary.encode() + b"\r\n\r\n"
        )
        sock.sendall(head + b"x" * 5000)
        eventually(lambda: any(_files_dir(server).iterdir()), message="no partial file")
    eventually(lambda: not any(_files_dir(server).iterdir()), message="partial file left")
    assert server.client.get("/v1/files").json()["data"] == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"endpoint": "/v1/chat/completions"}, "input_file_id"),
        ({"input_file_id": "f", "endpoint": "/v1/models"}, "endpoint"),
        (
            {"input_file_id": "f", "endpoint": "/v1/completions", "completion_window": "48h"},
            "completion_window",
        ),
        ({"input_file_id": "f", "endpoint": "/v1/completions", "metadata": {"k": 1}}, "metadata"),
    ],
)
def test_a_bad_batch_request_names_the_field_to_fix(server: Server, body: dict, param: str) -> None:
    uploaded = raw_upload(server, jsonl([chat_line("a", "m")])).json()
    if body.get("input_file_id") == "f":
        body["input_file_id"] = uploaded["id"]
    response = server.client.post("/v1/batches", json=body)
    assert response.status_code == 400, response.text
    assert _error(response)["param"] == param
    assert server.client.get("/v1/batches").json()["data"] == []


def test_fields_openai_may_add_later_are_ignored(server: Server) -> None:
    uploaded = raw_upload(server, jsonl([chat_line("a", "m")])).json()
    response = server.client.post(
        "/v1/batches",
        json={
            "input_file_id": uploaded["id"],
            "endpoint": "/v1/chat/completions",
            "output_expires_after": {"anchor": "created_at", "seconds": 3600},
        },
    )
    assert response.status_code == 200, response.text


def test_a_batch_of_an_unknown_file_is_404(server: Server) -> None:
    response = server.client.post(
        "/v1/batches", json={"input_file_id": "file-nope", "endpoint": "/v1/completions"}
    )
    assert response.status_code == 404
    assert _error(response)["param"] == "input_file_id"


def test_a_batch_request_that_is_not_json_is_refused(server: Server) -> None:
    response = server.client.post("/v1/batches", content=b"{nope")
    assert response.status_code == 400
    assert _error(response)["type"] == "invalid_request_error"


def test_a_huge_batch_request_is_refused(server: Server) -> None:
    response = server.client.post("/v1/batches", content=b" " * (1024 * 1024))
    assert response.status_code == 413


def test_an_output_file_cannot_be_the_input_of_a_batch(server: Server) -> None:
    server.launch_ready(model="m", gpu_ids=[0])
    client = client_for(server)
    done = wait_for_batch(client, submit(client, jsonl([chat_line("a", "m")])).id)
    response = server.client.post(
        "/v1/batches", json={"input_file_id": done.output_file_id, "endpoint": "/v1/completions"}
    )
    assert response.status_code == 400
    assert "purpose=batch" in _error(response)["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/batches/batch_nope",
        "/v1/files/file-nope",
        "/v1/files/file-nope/content",
        "/v1/files/..%2F..%2Fstate.sqlite3/content",
        "/v1/batches/x/y/z",
    ],
)
def test_unknown_ids_and_paths_are_openai_404s(server: Server, path: str) -> None:
    response = server.client.get(path)
    assert response.status_code == 404
    assert _error(response)["message"]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x"])
def test_a_bad_listing_limit_is_refused(server: Server, query: str) -> None:
    response = server.client.get(f"/v1/batches?{query}")
    assert response.status_code == 400
    assert _error(response)["param"] == "query.limit"


def test_a_line_longer_than_the_limit_is_an_error(
    start_server,  # type: ignore[no-untyped-def]
) -> None:
    server = start_server(VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES="4096")
    client = client_for(server)
    long_line = json.dumps(chat_line("long", "m", padding="x" * 50_000))
    content = (json.dumps(chat_line("a", "m")) + "\n" + long_line + "\n").encode()
    done = wait_for_batch(client, submit(client, content).id)
    assert done.status == "failed"
    assert done.errors is not None
    assert [(e.line, e.code) for e in done.errors.data or []] == [(2, "line_too_long")]


def test_overlong_custom_ids_and_too_many_models_are_line_errors(server: Server) -> None:
    client = client_for(server)
    lines = [chat_line("x" * 513, "m")] + [chat_line(f"r{i}", f"model-{i}") for i in range(65)]
    done = wait_for_batch(client, submit(client, jsonl(lines)).id)
    assert done.status == "failed"
    assert done.errors is not None
    assert [(e.line, e.code) for e in done.errors.data or []] == [
        (1, "invalid_custom_id"),
        (66, "too_many_models"),
    ]


def test_a_file_that_starts_with_a_byte_order_mark_is_read(server: Server) -> None:
    server.launch_ready(model="m", gpu_ids=[0])
    client = client_for(server)
    done = wait_for_batch(client, submit(client, b"\xef\xbb\xbf" + jsonl([chat_line("a", "m")])).id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert done.request_counts.completed == 1


def test_the_batch_api_needs_the_key(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(VLLM_ACCESS_KEY="k")
    for method, path in (("POST", "/v1/files"), ("GET", "/v1/batches"), ("GET", "/v1/files")):
        response = server.client.request(method, path, headers={"Authorization": "Bearer no"})
        assert response.status_code == 401
