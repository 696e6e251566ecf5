"""The dashboard at / in a real headless browser (Playwright driving Debian's chromium): the
access key through the browser's Basic credentials, a launch from the form, its progress to
ready, its log tail, and the stop button; a failed launch's error in its row, and ended
launches hidden until asked for; a scoped key made, shown once, used, metered and revoked;
a model downloaded from the form, cached, refused removal while a launch uses it, then
removed; a batch uploaded from the form, run, cancelled, its output and error files saved,
and why a failed one failed; a profile added, edited, refused, loaded, unloaded and
removed; a CPU box said to be one; the favicon. Run with `uv run pytest -m browser`
(.ci/run installs chromium)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.batch_helpers import chat_line, jsonl
from tests.conftest import ServerFactory
from tests.harness import Server
from tests.hub import StandinHub
from tests.test_downloads import MIB, REPO

pytestmark = pytest.mark.browser
KEY = "dashboard-key"
CHROMIUM = os.environ.get("VLLM_BOOTSTRAP_CHROMIUM") or shutil.which("chromium") or ""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM:
        pytest.fail("no chromium on PATH: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def keyed(start_server: ServerFactory) -> Server:
    return start_server(VLLM_ACCESS_KEY=KEY, FAKE_VLLM_LOAD_SECONDS="3")


@contextlib.contextmanager
def opened(browser: Browser) -> Iterator[Page]:
    """A page with the key as the browser's Basic credentials; no script error on it."""
    context = browser.new_context(
        http_credentials={"username": "anyone", "password": KEY},
        viewport={"width": 1400, "height": 1000},
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert errors == []


@pytest.fixture
def page(browser: Browser, keyed: Server) -> Iterator[Page]:
    with opened(browser) as page:
        yield page


def test_launch_watch_read_the_log_and_stop_from_the_page(
    page: Page, keyed: Server, tmp_path: Path
) -> None:
    page.goto(keyed.url + "/")
    expect(page.locator("#health")).to_contain_text("up")
    expect(page.locator("#gpus tbody tr")).to_have_count(2)
    expect(page.locator("#cpu-box")).to_be_hidden()
    page.fill("input[name=model]", "org/dashboard-model")
    page.fill("input[name=gpus]", "1")
    page.fill("input[name=args]", "--max-model-len 4096")
    page.click("#launch-form button[type=submit]")
    row = page.locator("#launches tbody tr").first
    expect(row).to_contain_text("org/dashboard-model")
    expect(row).to_have_attribute("data-state", "bootstrapping")
    expect(row).to_have_attribute("data-state", "ready", timeout=20_000)
    expect(page.locator("#gpus tbody tr[data-gpu='1']")).to_contain_text(
        row.get_attribute("data-launch-id") or "?"
    )
    # Launching showed its log; it grows as vLLM writes.
    expect(page.locator("#log")).to_contain_text("Application startup complete.")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    row.get_by_role("button", name="Stop").click()
    expect(row).to_have_attribute("data-state", "stopped", timeout=20_000)
    launch_id = row.get_attribute("data-launch-id")
    assert keyed.status(str(launch_id))["extra_args"] == ["--max-model-len", "4096"]


def test_a_refused_launch_shows_the_servers_reason(page: Page, keyed: Server) -> None:
    page.goto(keyed.url + "/")
    page.fill("input[name=model]", "org/m")
    page.fill("input[name=gpus]", "7")
    page.click("#launch-form button[type=submit]")
    expect(page.locator("#launch-error")).to_contain_text("7")


def chat(server: Server, secret: str) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "m", "messages": [{"role": "user", "content": "hello"}]},
        timeout=30,
    )


def test_a_key_made_in_the_page_shows_its_secret_once_its_usage_and_is_revoked(
    page: Page, keyed: Server
) -> None:
    keyed.launch_ready(model="m", gpu_ids=[0])
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(keyed.url + "/")
    form = page.locator("#key-form")
    form.locator("input[name=name]").fill("team-a")
    form.locator("input[name=scopes][value=batches]").check()
    form.locator("input[name=models]").fill("m, other/model")
    form.locator("input[name=max_concurrency]").fill("2")
    form.locator("input[name=requests_per_minute]").fill("60")
    form.locator("input[name=priority]").fill("-1")
    form.locator("button[type=submit]").click()

    # The secret, once, in its own box; the form is cleared for the next key.
    box = page.locator("#new-key")
    expect(box).to_be_visible()
    expect(box).to_contain_text("team-a")
    secret = page.locator("#new-key-secret").input_value()
    assert secret.startswith("vbk_")
    expect(form.locator("input[name=name]")).to_have_value("")
    page.locator("#new-key-copy").click()
    expect(page.locator("#new-key-copy")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret

    # Listed by name and prefix, with what it may reach; the server kept the same.
    row = page.locator("#keys tbody tr[data-key-name='team-a']")
    for shown in (
        secret[:12],
        "batches, inference",
        "m, other/model",
        "2 at once",
        "60 requests/min",
    ):
        expect(row).to_contain_text(shown)
    key_id = row.get_attribute("data-key-id")
    stored = keyed.client.get(f"/keys/{key_id}").json()
    assert stored["models"] == ["m", "other/model"]
    assert stored["priority"] == -1
    assert stored["tokens_per_minute"] is None

    # Done forgets it: the page never shows the secret again.
    page.locator("#new-key-done").click()
    expect(box).to_be_hidden()
    assert page.locator("#new-key-secret").input_value() == ""
    page.reload()
    expect(row).to_be_visible()
    assert secret not in page.content()

    # A request with the key shows up in its usage at the next refresh.
    assert chat(keyed, secret).status_code == 200
    usage = page.locator(f"#usage tbody tr[data-key-id='{key_id}'][data-model='m']")
    expect(usage).to_have_count(1, timeout=10_000)
    expect(usage.locator("td").nth(1)).to_have_text("team-a")
    expect(usage.locator("td").nth(3)).to_have_text("1")  # requests

    # Revoking asks first: dismissed, the key stays.
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name="Revoke").click()
    expect(row).to_have_count(1)
    assert chat(keyed, secret).status_code == 200

    # Accepted, the key is gone from the table and refused; its usage stays, marked.
    questions: list[str] = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
    row.get_by_role("button", name="Revoke").click()
    expect(row).to_have_count(0)
    assert "team-a" in questions[0]
    assert chat(keyed, secret).status_code == 401
    expect(usage.locator("td").nth(1)).to_have_text("team-a (revoked)")
    expect(usage.locator("td").nth(3)).to_have_text("2")


def test_a_refused_key_shows_the_servers_reason(page: Page, keyed: Server) -> None:
    assert keyed.client.post("/keys", json={"name": "taken"}).status_code == 201
    page.goto(keyed.url + "/")
    form = page.locator("#key-form")
    form.locator("input[name=name]").fill("taken")
    form.locator("button[type=submit]").click()
    expect(page.locator("#key-error")).to_contain_text("a key named 'taken' exists already")
    form.locator("input[name=name]").fill("-starts-with-a-dash")
    form.locator("input[name=scopes][value=inference]").uncheck()
    form.locator("button[type=submit]").click()
    expect(page.locator("#key-error")).to_contain_text("name")
    expect(page.locator("#key-error")).to_contain_text("scopes")
    expect(page.locator("#new-key")).to_be_hidden()
    # The launch form's error line is left alone.
    expect(page.locator("#launch-error")).to_have_text("")


@pytest.fixture
def with_hub(start_server: ServerFactory, hub: StandinHub) -> Server:
    """A server that downloads from the stand-in Hub: REPO (4 MiB of weights) and a larger
    org/other, each sent at 1 MiB/s, so a refresh or two sees them under way."""
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": 4 * MIB})
    hub.add_repo("org/other", {"config.json": b"{}", "model.safetensors": 32 * MIB})
    hub.behave(bandwidth_bytes_per_second=MIB)
    return start_server(VLLM_ACCESS_KEY=KEY, **hub.env())


def test_a_download_from_the_page_completes_is_cached_and_removed_once_unused(
    browser: Browser, with_hub: Server
) -> None:
    with opened(browser) as page:
        page.goto(with_hub.url + "/")
        form = page.locator("#download-form")
        for repo in (REPO, "org/other"):
            form.locator("input[name=repo]").fill(repo)
            form.locator("button[type=submit]").click()
            expect(form.locator("input[name=repo]")).to_have_value("")  # taken, cleared
        tiny = page.locator(f"#downloads tbody tr[data-model='{REPO}']")
        other = page.locator("#downloads tbody tr[data-model='org/other']")

        # Under way: its rate and time left; Cancel stops the other one.
        expect(tiny).to_have_attribute("data-state", "downloading")
        # The cells' text runs together: "693.6 KiB/s" then "4 s" (rate, then time left).
        expect(tiny).to_contain_text(re.compile(r"iB/s\d+ s"), timeout=10_000)
        other.get_by_role("button", name="Cancel").click()
        expect(other).to_have_attribute("data-state", "cancelled")
        expect(other.get_by_role("button", name="Cancel")).to_have_count(0)
        expect(tiny).to_have_attribute("data-state", "completed", timeout=20_000)
        expect(tiny).to_contain_text("4.0 MiB / 4.0 MiB")
        expect(tiny.get_by_role("button", name="Cancel")).to_have_count(0)

        # Cached; a launch of it makes the server refuse the removal, in its words.
        cached = page.locator(f"#cache tbody tr[data-model='{REPO}']")
        expect(cached).to_contain_text("4.0 MiB")
        expect(cached).to_contain_text("main")
        launch_id = with_hub.launch_ready(model=REPO)["launch_id"]
        expect(cached).to_contain_text(f"launch {launch_id}")
        page.on("dialog", lambda dialog: dialog.accept())
        cached.get_by_role("button", name="Remove").click()
        expect(page.locator("#cache-error")).to_contain_text(f"in use by launch(es) {launch_id}")
        expect(cached).to_have_count(1)

        with_hub.stop(launch_id)
        cached.get_by_role("button", name="Remove").click()
        expect(cached).to_have_count(0)
    models = [entry["model"] for entry in with_hub.client.get("/cache").json()["data"]]
    assert REPO not in models


def test_without_the_key_the_browser_is_asked_for_it(keyed: Server) -> None:
    refused = httpx.get(keyed.url + "/")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    page = httpx.get(keyed.url + "/", auth=("me", KEY))
    assert page.headers["content-security-policy"] == (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'"
    )
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert '<script src="/dashboard/dashboard.js"' in page.text


def test_user_text_is_shown_as_text_never_run(page: Page, keyed: Server) -> None:
    hostile = '<img src=x onerror="window.pwned=1">'
    stored = httpx.put(f"{keyed.url}/models/evil", json={"model": hostile}, auth=("me", KEY))
    assert stored.status_code == 200
    key = httpx.post(f"{keyed.url}/keys", json={"name": "k", "models": [hostile]}, auth=("me", KEY))
    assert key.status_code == 201
    page.goto(keyed.url + "/")
    expect(page.locator("#profiles tbody")).to_contain_text(hostile)
    expect(page.locator("#keys tbody")).to_contain_text(hostile)
    assert page.evaluate("window.pwned") is None
    assert page.locator("main img").count() == 0


@pytest.mark.parametrize(
    ("path", "rendered"), [("/docs", ".opblock"), ("/redoc", "[data-section-id]")]
)
def test_the_api_docs_render_from_this_server_alone(
    page: Page, keyed: Server, path: str, rendered: str
) -> None:
    fetched: list[str] = []
    blocked: list[str] = []
    page.on("requestfinished", lambda request: fetched.append(request.url))
    page.on("requestfailed", lambda request: blocked.append(str(request.failure)))
    page.goto(keyed.url + path)
    expect(page.locator(rendered).first).to_be_visible(timeout=20_000)
    # Every operation is listed, from the server's own OpenAPI document.
    assert page.locator(rendered).count() >= 10
    assert fetched
    assert all(url.startswith((keyed.url + "/", "blob:")) for url in fetched), fetched
    # ReDoc's sidebar asks for Redocly's logo from their CDN: the policy stops it.
    assert set(blocked) <= {"csp"}, blocked


def test_a_failed_launch_shows_its_error_in_its_row(page: Page, keyed: Server) -> None:
    page.goto(keyed.url + "/")
    page.fill("input[name=model]", "crash-on-start")
    page.click("#launch-form button[type=submit]")
    # Launched from the form, its log is open: "hide ended" keeps it, with why it failed.
    row = page.locator("#launches tbody tr").first
    expect(row).to_have_attribute("data-state", "failed", timeout=20_000)
    launch_id = row.get_attribute("data-launch-id")
    error = keyed.status(str(launch_id))["error"]
    assert error.startswith("vLLM exited with code")
    expect(row.locator(".reason")).to_be_visible()
    expect(row.locator(".reason")).to_have_text(error)


def test_ended_launches_are_hidden_by_default_and_shown_on_request(
    page: Page, keyed: Server
) -> None:
    stopped = keyed.launch_ready(model="org/stopped", gpu_ids=[0])["launch_id"]
    keyed.stop(stopped)
    failed = keyed.launch(model="crash-on-start", gpu_ids=[0])["launch_id"]
    keyed.wait_for(failed, ["failed"])
    live = keyed.launch(model="org/live", gpu_ids=[1])["launch_id"]
    page.goto(keyed.url + "/")
    rows = page.locator("#launches tbody tr")
    expect(page.locator("#hide-ended")).to_be_checked()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-launch-id", live)
    expect(page.locator("#launches-hidden")).to_have_text("(2 hidden)")

    page.locator("#hide-ended").uncheck()
    expect(rows).to_have_count(3)
    expect(page.locator(f"tr[data-launch-id='{stopped}']")).to_have_attribute(
        "data-state", "stopped"
    )
    expect(page.locator(f"tr[data-launch-id='{failed}'] .reason")).to_contain_text("vLLM exited")
    expect(page.locator("#launches-hidden")).to_have_text("")
    page.wait_for_timeout(2_500)  # a refresh keeps the choice
    expect(rows).to_have_count(3)

    page.locator("#hide-ended").check()
    expect(rows).to_have_count(1)


@pytest.fixture
def batching(start_server: ServerFactory) -> Server:
    """Batches of a model nobody serves fail their lines after a second; each request takes
    0.3 s, so a batch of many lines is still running when the page cancels it."""
    return start_server(
        VLLM_ACCESS_KEY=KEY,
        VLLM_BATCH_MODEL_WAIT_SECONDS="1",
        VLLM_BATCH_IN_FLIGHT_PER_LAUNCH="2",
        FAKE_VLLM_LATENCY_SECONDS="0.3",
    )


def submit_from_the_page(page: Page, content: bytes, endpoint: str) -> Locator:
    """The batch's row, once the form has uploaded `content` and started it."""
    form = page.locator("#batch-form")
    form.locator("input[name=file]").set_input_files(
        {"name": "input.jsonl", "mimeType": "application/jsonl", "buffer": content}
    )
    form.locator("select[name=endpoint]").select_option(endpoint)
    form.locator("button[type=submit]").click()
    expect(form.locator("input[name=file]")).to_have_value("")  # taken, cleared
    expect(page.locator("#batch-error")).to_have_text("")
    return page.locator("#batches tbody tr").first


def test_a_batch_submitted_from_the_page_completes_and_its_files_are_saved(
    page: Page, batching: Server
) -> None:
    batching.launch_ready(model="org/alpha", gpu_ids=[0])
    lines = [chat_line(f"req-{i}", "org/alpha") for i in range(3)]
    lines.append(chat_line("lost", "no-such-model"))
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(batching.url + "/")
    row = submit_from_the_page(page, jsonl(lines), "/v1/chat/completions")

    expect(row).to_have_attribute("data-status", "completed", timeout=20_000)
    batch_id = str(row.get_attribute("data-batch"))
    stored = batching.client.get(f"/v1/batches/{batch_id}").json()
    assert stored["endpoint"] == "/v1/chat/completions"
    assert stored["completion_window"] == "24h"
    expect(row).to_contain_text("4/4")
    # The line that failed, from the first lines of the error file.
    expect(row.locator(".reason")).to_contain_text("lost: model_not_found")

    with page.expect_download() as caught:
        row.get_by_role("button", name="Output").click()
    output = caught.value
    assert output.suggested_filename == f"{batch_id}_output.jsonl"
    answers = [json.loads(line) for line in Path(output.path()).read_text().splitlines()]
    assert sorted(answer["custom_id"] for answer in answers) == ["req-0", "req-1", "req-2"]
    assert all(answer["response"]["status_code"] == 200 for answer in answers)

    with page.expect_download() as caught:
        row.get_by_role("button", name="Errors").click()
    errors = Path(caught.value.path()).read_text().splitlines()
    assert [json.loads(line)["custom_id"] for line in errors] == ["lost"]
    expect(page.locator("#batch-error")).to_have_text("")
    # The Blob URL is a download, which the page's policy (default-src 'self') lets through.
    assert not [text for text in console if "Content Security Policy" in text], console


def test_a_running_batch_is_cancelled_from_the_page(page: Page, batching: Server) -> None:
    batching.launch_ready(model="org/alpha", gpu_ids=[0])
    lines = [chat_line(f"req-{i}", "org/alpha") for i in range(60)]
    page.goto(batching.url + "/")
    row = submit_from_the_page(page, jsonl(lines), "/v1/chat/completions")
    expect(row).to_have_attribute("data-status", "in_progress", timeout=10_000)

    # It asks first: dismissed, the batch runs on.
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name="Cancel").click()
    expect(row).to_have_attribute("data-status", "in_progress")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Cancel").click()
    expect(row).to_have_attribute("data-status", "cancelled", timeout=20_000)
    expect(row.get_by_role("button", name="Cancel")).to_have_count(0)
    batch = batching.client.get(f"/v1/batches/{row.get_attribute('data-batch')}").json()
    assert batch["status"] == "cancelled"
    assert batch["request_counts"]["completed"] < 60


def test_a_failed_batch_shows_its_errors_by_line(page: Page, keyed: Server) -> None:
    content = "\n".join(
        [
            json.dumps(chat_line("a", "m")),
            "{not json",
            json.dumps({**chat_line("b", "m"), "method": "GET"}),
        ]
    ).encode()
    page.goto(keyed.url + "/")
    row = submit_from_the_page(page, content, "/v1/chat/completions")
    expect(row).to_have_attribute("data-status", "failed", timeout=10_000)
    reason = row.locator(".reason")
    expect(reason).to_be_visible()
    expect(reason).to_contain_text("line 2: invalid_json_line")
    expect(reason).to_contain_text("line 3: invalid_method")
    # Not a 0/0 bar: it never had requests.
    expect(row.locator("td").nth(3)).to_have_text("-")
    expect(row.get_by_role("button", name="Cancel")).to_have_count(0)


def test_a_profile_is_added_edited_and_removed_from_the_page(page: Page, keyed: Server) -> None:
    page.goto(keyed.url + "/")
    form = page.locator("#profile-form")
    name = form.locator("input[name=name]")
    name.fill("team/qwen")
    form.locator("input[name=model]").fill("org/qwen")
    form.locator("input[name=gpu_count]").fill("1")
    form.locator("input[name=extra_args]").fill(
        """--max-model-len 4096 --hf-overrides '{"a": 1}'"""
    )
    form.locator("textarea[name=env]").fill("A=1\nB=two words")
    form.locator("input[name=idle_ttl_seconds]").fill("300")
    form.locator("input[name=sleep]").check()
    form.locator("button[type=submit]").click()
    row = page.locator("#profiles tbody tr[data-profile='team/qwen']")
    expect(row).to_contain_text("org/qwen")
    expect(row).to_contain_text("sleep, idle 300 s")
    expect(name).to_have_value("")  # taken, cleared
    stored = keyed.client.get("/models/team/qwen").json()
    assert stored["extra_args"] == ["--max-model-len", "4096", "--hf-overrides", '{"a": 1}']
    assert stored["env"] == {"A": "1", "B": "two words"}
    assert (stored["gpu_count"], stored["idle_ttl_seconds"], stored["sleep"]) == (1, 300, True)

    # Edit fills the form with the profile, its name fixed (another name is another profile).
    row.get_by_role("button", name="Edit").click()
    expect(name).to_have_value("team/qwen")
    expect(name).to_have_attribute("readonly", "")
    expect(form.locator("input[name=extra_args]")).to_have_value(
        """--max-model-len 4096 --hf-overrides '{"a": 1}'"""
    )
    expect(form.locator("textarea[name=env]")).to_have_value("A=1\nB=two words")
    expect(form.locator("input[name=sleep]")).to_be_checked()

    # The server's refusal, in its words; the form keeps what was typed.
    form.locator("input[name=gpu_ids]").fill("0")
    form.locator("button[type=submit]").click()
    expect(page.locator("#profile-error")).to_contain_text("give gpu_count or gpu_ids, not both")
    expect(name).to_have_value("team/qwen")

    form.locator("input[name=gpu_count]").fill("")
    form.locator("input[name=sleep]").uncheck()
    form.locator("input[name=pinned]").check()
    form.locator("button[type=submit]").click()
    expect(form.locator("button[type=submit]")).to_have_text("Add profile")
    expect(page.locator("#profile-error")).to_have_text("")
    expect(row.locator("td").nth(2)).to_have_text("0")
    expect(row.locator("td").nth(3)).to_have_text("pinned, idle 300 s")
    stored = keyed.client.get("/models/team/qwen").json()
    assert (stored["gpu_ids"], stored["gpu_count"], stored["sleep"]) == ([0], None, False)
    assert stored["env"] == {"A": "1", "B": "two words"}

    # A field the server refuses is named.
    name.fill("other")
    form.locator("input[name=model]").fill("org/other")
    form.locator("input[name=idle_ttl_seconds]").fill("-5")
    form.locator("button[type=submit]").click()
    expect(page.locator("#profile-error")).to_contain_text("idle_ttl_seconds")
    assert keyed.client.get("/models/other").status_code == 404

    # Removing asks first: dismissed, the profile stays.
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name="Remove").click()
    expect(row).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Remove").click()
    expect(row).to_have_count(0)
    assert keyed.client.get("/models/team/qwen").status_code == 404


def test_load_and_unload_follow_the_profiles_state(page: Page, keyed: Server) -> None:
    assert keyed.client.put("/models/m", json={"model": "org/m", "gpu_ids": [0]}).is_success
    napper = {"model": "org/napper", "gpu_ids": [1], "sleep": True}
    assert keyed.client.put("/models/napper", json=napper).is_success
    page.goto(keyed.url + "/")
    row = page.locator("#profiles tbody tr[data-profile='m']")
    load = row.get_by_role("button", name="Load", exact=True)
    unload = row.get_by_role("button", name="Unload", exact=True)
    expect(row).to_have_attribute("data-state", "not loaded")
    expect(load).to_be_enabled()
    expect(unload).to_be_disabled()
    # Buttons side by side do not touch.
    left, right = load.bounding_box(), unload.bounding_box()
    assert left is not None
    assert right is not None
    assert right["x"] - (left["x"] + left["width"]) >= 4

    load.click()
    expect(row).to_have_attribute("data-state", "loading")
    expect(load).to_be_disabled()
    expect(unload).to_be_disabled()
    expect(row).to_have_attribute("data-state", "loaded", timeout=20_000)
    expect(load).to_be_disabled()
    expect(unload).to_be_enabled()
    unload.click()
    expect(row).to_have_attribute("data-state", "not loaded", timeout=20_000)
    expect(load).to_be_enabled()
    expect(unload).to_be_disabled()

    # Asleep, it may be woken (Load) or stopped (Unload).
    assert keyed.client.post("/models/napper/load?wait=true", timeout=30).is_success
    sleeper = page.locator("#profiles tbody tr[data-profile='napper']")
    expect(sleeper).to_have_attribute("data-state", "loaded")
    sleeper.get_by_role("button", name="Unload", exact=True).click()
    expect(sleeper).to_have_attribute("data-state", "sleeping", timeout=20_000)
    expect(sleeper.get_by_role("button", name="Load", exact=True)).to_be_enabled()
    expect(sleeper.get_by_role("button", name="Unload", exact=True)).to_be_enabled()
    sleeper.get_by_role("button", name="Load", exact=True).click()
    expect(sleeper).to_have_attribute("data-state", "loaded", timeout=20_000)


def test_a_cpu_box_says_so_calmly_instead_of_an_empty_gpu_table(
    browser: Browser, start_server: ServerFactory
) -> None:
    # As tests/test_cpu_only.py: the stand-in nvidia-smi leaves PATH.
    cpu_box = start_server(VLLM_ACCESS_KEY=KEY, PATH=os.environ["PATH"])
    with opened(browser) as page:
        page.goto(cpu_box.url + "/")
        note = page.locator("#cpu-box")
        expect(note).to_be_visible()
        expect(note).to_have_text("CPU box: launches run on vLLM's CPU build")
        expect(page.locator("#gpus")).to_be_hidden()
        expect(page.locator("#gpu-error")).to_have_text("")
        expect(page.locator("#host")).to_contain_text("CPUs")
        expect(page.locator("#host")).not_to_contain_text("nvidia-smi")


def test_a_gpu_box_whose_nvidia_smi_fails_says_so(
    browser: Browser, start_server: ServerFactory
) -> None:
    broken = start_server(VLLM_ACCESS_KEY=KEY, FAKE_NVIDIA_SMI_FAIL="1")
    with opened(browser) as page:
        page.goto(broken.url + "/")
        expect(page.locator("#gpu-error")).to_contain_text("GPUs could not be detected")
        expect(page.locator("#cpu-box")).to_be_hidden()


def test_the_favicon_is_served_within_the_policy(page: Page, keyed: Server) -> None:
    icon = httpx.get(keyed.url + "/dashboard/favicon.svg", auth=("me", KEY))
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/svg+xml"
    assert ElementTree.fromstring(icon.content).tag == "{http://www.w3.org/2000/svg}svg"
    page.goto(keyed.url + "/")
    link = page.locator("link[rel=icon]")
    expect(link).to_have_attribute("href", "/dashboard/favicon.svg")
    # The page may load it: same origin, under its own policy.
    assert page.evaluate("fetch(document.querySelector('link[rel=icon]').href).then(r => r.ok)")
