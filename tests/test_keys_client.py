"""Scoped keys and their usage through the Python clients and the command line, against the
real server and the stand-in vLLM with the access key set: keys created (the secret once),
listed, changed and revoked; usage left by a scoped key's request, read by the admin (every
key's) and by the key itself (its own)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.harness import Server
from tests.test_cli import cli as run_cli
from vllm_bootstrap.client import ApiError, AsyncClient, Client

ADMIN = "admin-secret"


@pytest.fixture
def keyed(start_server: ServerFactory) -> Server:
    return start_server(VLLM_ACCESS_KEY=ADMIN)


@pytest.fixture
def admin(keyed: Server) -> Iterator[Client]:
    with Client(keyed.url, key=ADMIN) as client:
        yield client


def chat(server: Server, secret: str, model: str = "m") -> None:
    """One request to /v1 with a scoped key, as an OpenAI client sends it."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    answer = httpx.post(
        f"{server.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def test_a_key_is_created_with_its_secret_once_listed_changed_and_revoked(admin: Client) -> None:
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    created = admin.create_key(
        "alice", ["inference"], models=["m"], requests_per_minute=60, expires_at=tomorrow
    )
    assert created.key.startswith("vbk_")
    assert created.prefix == created.key[:12]
    assert (created.scopes, created.models) == (["inference"], ["m"])
    assert created.expires_at == int(tomorrow.timestamp())
    with pytest.raises(ApiError) as taken:
        admin.create_key("alice")
    assert taken.value.status == 409
    listed = admin.keys()
    assert [(key.id, key.name, key.in_flight) for key in listed] == [(created.id, "alice", 0)]
    assert "key" not in (listed[0].model_extra or {})  # the secret is never shown again
    changed = admin.update_key(
        created.id, requests_per_minute=None, tokens_per_minute=1000, models=None
    )
    assert (changed.requests_per_minute, changed.tokens_per_minute) == (None, 1000)
    assert changed.models is None
    assert admin.key(created.id) == changed
    admin.delete_key(created.id)
    with pytest.raises(ApiError) as gone:
        admin.key(created.id)
    assert gone.value.status == 404
    assert admin.keys() == []


def test_usage_of_a_scoped_keys_requests_for_the_admin_and_for_the_key_itself(
    admin: Client, keyed: Server
) -> None:
    created = admin.create_key("bob", models=["m"])
    keyed.launch_ready(model="m", gpu_ids=[0])
    chat(keyed, created.key)
    chat(keyed, created.key)
    [row] = admin.usage()
    assert (row.key_id, row.key, row.model, row.day) == (created.id, "bob", "m", today())
    assert (row.requests, row.completion_tokens, row.errors) == (2, 4, 0)
    assert row.total_tokens == row.prompt_tokens + row.completion_tokens > 4
    [totals] = admin.usage(key="bob", since=today(), until=today(), group_by="")
    assert (totals.key_id, totals.model, totals.requests) == (None, None, 2)
    assert admin.usage(model="other") == []
    with Client(keyed.url, key=created.key) as own:
        [mine] = own.my_usage(group_by=["model"])
        assert (mine.model, mine.day, mine.requests) == ("m", None, 2)
        with pytest.raises(ApiError) as not_admin:
            own.usage()
        assert not_admin.value.status == 403
    with pytest.raises(ApiError) as no_usage:
        admin.my_usage()
    assert no_usage.value.status == 400


@pytest.mark.anyio
async def test_the_async_client_has_the_same_calls(keyed: Server) -> None:
    async with AsyncClient(keyed.url, key=ADMIN) as admin:
        created = await admin.create_key("carol", "inference", max_concurrency=2, priority=5)
        assert (created.max_concurrency, created.priority) == (2, 5)
        assert [key.id for key in await admin.keys()] == [created.id]
        changed = await admin.update_key(created.id, name="carol2")
        assert (await admin.key(created.id)).name == changed.name == "carol2"
        keyed.launch_ready(model="m", gpu_ids=[0])
        chat(keyed, created.key)
        [row] = await admin.usage(key=created.id, group_by=["key"])
        async with AsyncClient(keyed.url, key=created.key) as own:
            [mine] = await own.my_usage()
        await admin.delete_key(created.id)
        assert await admin.keys() == []
    assert (row.key, row.model, row.requests) == ("carol2", None, 1)
    assert (mine.model, mine.day, mine.requests) == ("m", today(), 1)


def cli(
    server: Server, *args: str, key: str = ADMIN, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The CLI through its real entry point (tests/test_cli.py), as the admin by default."""
    return run_cli(server, *args, key=key, check=check)


def test_the_command_line_creates_lists_and_removes_keys_and_shows_usage(keyed: Server) -> None:
    created = cli(
        keyed, "keys", "create", "dave", "--model", "m", "--rpm", "100", "--expires-at",
        str(int(time.time()) + 3600),
    ).stdout.splitlines()  # fmt: skip
    key_id, secret, note = created[0].split()[0], created[1], created[2]
    assert created[0] == f"{key_id} dave (inference)"
    assert secret.startswith("vbk_")
    assert "not shown again" in note
    taken = cli(keyed, "keys", "create", "dave", check=False)
    assert taken.returncode == 1
    assert taken.stderr.startswith("vllm-bootstrap: the server answered 409: ")
    table = cli(keyed, "keys", "ls").stdout.splitlines()
    assert table[0].split()[:5] == ["ID", "NAME", "PREFIX", "SCOPES", "MODELS"]
    assert table[1].split()[:7] == [key_id, "dave", secret[:12], "inference", "m", "-", "100"]
    [listed] = json.loads(cli(keyed, "keys", "ls", "--json").stdout)
    assert cli(keyed, "keys", "ls", "-q").stdout == f"{key_id}\n"
    assert (listed["id"], listed["requests_per_minute"]) == (key_id, 100)

    keyed.launch_ready(model="m", gpu_ids=[0])
    chat(keyed, secret)
    usage = cli(keyed, "usage").stdout.splitlines()
    assert usage[0].split()[:4] == ["KEY", "MODEL", "DAY", "REQUESTS"]
    assert usage[1].split()[:4] == ["dave", "m", today(), "1"]
    by_model = json.loads(
        cli(keyed, "usage", "--of", "dave", "--group-by", "model", "--json").stdout
    )
    assert [(row["model"], row["requests"]) for row in by_model] == [("m", 1)]
    assert "key" not in by_model[0]  # only the columns grouped by
    mine = cli(keyed, "usage", "--me", key=secret).stdout.splitlines()
    assert mine[0].split()[:3] == ["MODEL", "DAY", "REQUESTS"]
    assert mine[1].split()[:3] == ["m", today(), "1"]

    assert cli(keyed, "keys", "rm", key_id).stdout.strip() == f"{key_id} deleted"
    assert cli(keyed, "keys", "ls").stdout.splitlines()[1:] == []
    refused = cli(keyed, "usage", "--me", key=secret, check=False)  # revoked at once
    assert (refused.returncode, "401" in refused.stderr) == (1, True)
