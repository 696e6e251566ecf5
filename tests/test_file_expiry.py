"""Files that expire, as OpenAI's API has them: `expires_after` on an upload, a batch's
`output_expires_after`, and the server's default retention for output files. An expired
file's content is deleted from disk; its record stays and says so. A batch's input is kept
while the batch runs."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.batch_helpers import (
    chat_line,
    client_for,
    jsonl,
    result_lines,
    submit,
    wait_for_batch,
)
from tests.conftest import ServerFactory
from tests.harness import Server, eventually

SOON = {"anchor": "created_at", "seconds": 1}


def _stored(server: Server, file_id: str) -> Path:
    return Path(server.env["VLLM_BOOTSTRAP_STATE_DIR"]) / "files" / file_id


def _expired(client: openai.OpenAI, file_id: str) -> bool:
    return client.files.retrieve(file_id).status == "expired"


def test_an_upload_past_its_expiry_loses_its_content_and_says_so(server: Server) -> None:
    client = client_for(server)
    uploaded = client.files.create(
        file=("input.jsonl", jsonl([chat_line("a", "m")])),
        purpose="batch",
        expires_after=SOON,  # type: ignore[arg-type]
    )
    assert uploaded.expires_at == uploaded.created_at + 1
    assert _stored(server, uploaded.id).is_file()
    eventually(lambda: _expired(client, uploaded.id), timeout=10)
    assert not _stored(server, uploaded.id).exists()
    record = client.files.retrieve(uploaded.id)
    assert "its content was deleted" in str(record.status_details)
    with pytest.raises(openai.NotFoundError) as gone:
        client.files.content(uploaded.id)
    assert gone.value.code == "file_expired"
    with pytest.raises(openai.NotFoundError):  # nor can a batch start from it
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )


def test_the_input_of_a_running_batch_is_kept_past_its_expiry(server: Server) -> None:
    client = client_for(server)

    def upload(custom_id: str) -> str:
        content = jsonl([chat_line(custom_id, "org/nobody-serves-this")])
        return client.files.create(
            file=("input.jsonl", content),
            purpose="batch",
            expires_after=SOON,  # type: ignore[arg-type]
        ).id

    used = upload("a")
    batch = client.batches.create(
        input_file_id=used, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_for_batch(client, batch.id, statuses={"in_progress"})
    # A file uploaded after it expires: once it has, the expiry check has passed both.
    unused = upload("b")
    eventually(lambda: _expired(client, unused), timeout=10)
    assert client.files.retrieve(used).status == "processed"
    assert _stored(server, used).is_file()
    client.batches.cancel(batch.id)
    wait_for_batch(client, batch.id)
    eventually(lambda: _expired(client, used), timeout=10)


def test_a_batch_output_expires_after_what_the_batch_asked(server: Server) -> None:
    server.launch_ready(model="m", gpu_ids=[0])
    client = client_for(server)
    uploaded = client.files.create(file=("in.jsonl", jsonl([chat_line("a", "m")])), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        output_expires_after=SOON,  # type: ignore[arg-type]
    )
    assert batch.model_dump()["output_expires_after"] == SOON
    done = wait_for_batch(client, batch.id)
    assert done.output_file_id is not None
    output = client.files.retrieve(done.output_file_id)
    assert output.expires_at == output.created_at + 1
    eventually(lambda: _expired(client, done.output_file_id or ""), timeout=10)
    assert client.files.retrieve(uploaded.id).status == "processed"  # no expiry asked


def test_output_files_follow_the_default_retention(start_server: ServerFactory) -> None:
    # Long enough to read the output on a loaded machine before it expires (1 s was not).
    server = start_server(VLLM_BOOTSTRAP_BATCH_OUTPUT_RETENTION_SECONDS="3")
    server.launch_ready(model="m", gpu_ids=[0])
    client = client_for(server)
    done = wait_for_batch(client, submit(client, jsonl([chat_line("a", "m")])).id)
    assert result_lines(client, done.output_file_id)[0]["custom_id"] == "a"
    eventually(lambda: _expired(client, done.output_file_id or ""), timeout=10)


@pytest.mark.parametrize(
    "fields",
    [
        {"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "60"},
        {"expires_after[anchor]": "created_at", "expires_after[seconds]": "0"},
        {"expires_after[anchor]": "created_at", "expires_after[seconds]": "a week"},
        {"expires_after[anchor]": "created_at"},
        {"expires_after[anchor]": "created_at", "expires_after[seconds]": "\u00b2"},  # "²"
    ],
)
def test_a_malformed_expiry_is_refused(server: Server, fields: dict[str, str]) -> None:
    response = server.client.post(
        "/v1/files",
        data={"purpose": "batch", **fields},
        files={"file": ("in.jsonl", jsonl([chat_line("a", "m")]))},
    )
    assert response.status_code == 400, response.text
    assert "expires_after[" in response.json()["error"]["message"]


def test_a_file_past_its_expiry_is_unusable_before_the_next_sweep(
    start_server: ServerFactory,
) -> None:
    server = start_server(VLLM_BOOTSTRAP_FILE_EXPIRY_CHECK_SECONDS="3600")
    client = client_for(server)
    uploaded = client.files.create(
        file=("input.jsonl", jsonl([chat_line("a", "m")])),
        purpose="batch",
        expires_after=SOON,  # type: ignore[arg-type]
    )

    def refused() -> bool:
        return server.client.get(f"/v1/files/{uploaded.id}/content").status_code == 404

    eventually(refused, timeout=10)
    assert client.files.retrieve(uploaded.id).status == "processed"  # not swept yet
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
