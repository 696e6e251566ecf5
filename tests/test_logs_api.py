"""GET /logs/{id}: incremental reads by byte offset."""

from __future__ import annotations

from tests.harness import Server


def test_offsets_return_only_what_is_new(server: Server) -> None:
    launch = server.launch_ready(model="m", gpu_ids=[0])
    first = server.client.get(f"/logs/{launch['launch_id']}").json()
    assert first["offset"] == 0
    assert first["next_offset"] == first["size"] == len(first["content"].encode())
    assert "vLLM API server version" in first["content"]
    again = server.client.get(
        f"/logs/{launch['launch_id']}", params={"offset": first["next_offset"]}
    ).json()
    assert again["content"] == ""
    assert again["next_offset"] == first["next_offset"]
    server.stop(launch["launch_id"])
    after_stop = server.client.get(
        f"/logs/{launch['launch_id']}", params={"offset": first["next_offset"]}
    ).json()
    assert "Shutting down" in after_stop["content"]
    assert first["content"] not in after_stop["content"]


def test_chunks_never_split_a_character(server: Server) -> None:
    model = "模型-😀-" * 20
    launch = server.launch_ready(model=model, gpu_ids=[0])
    pieces, offset = [], 0
    while True:
        chunk = server.client.get(
            f"/logs/{launch['launch_id']}", params={"offset": offset, "limit": 5}
        ).json()
        if chunk["next_offset"] == offset:
            break
        pieces.append(chunk["content"])
        offset = chunk["next_offset"]
    text = "".join(pieces)
    assert model in text
    assert "\ufffd" not in text


def test_offset_past_the_end_is_empty(server: Server) -> None:
    launch = server.launch(model="m", gpu_ids=[0])
    chunk = server.client.get(f"/logs/{launch['launch_id']}", params={"offset": 10**12}).json()
    assert chunk["content"] == ""
    assert chunk["next_offset"] == 10**12


def test_bad_offsets_are_rejected(server: Server) -> None:
    launch = server.launch(model="m", gpu_ids=[0])
    for offset in ("-1", "abc", "1.5"):
        response = server.client.get(f"/logs/{launch['launch_id']}", params={"offset": offset})
        assert response.status_code == 422, offset
        assert "offset" in response.json()["detail"]
    assert server.client.get("/logs/unknown").status_code == 404
