"""The dashboard at / in a real headless browser (Playwright driving Debian's chromium): the
access key through the browser's Basic credentials, a launch from the form, its progress to
ready, its log tail, and the stop button. Run with `uv run pytest -m browser` (.ci/run
installs chromium)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import ServerFactory
from tests.harness import Server

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


@pytest.fixture
def page(browser: Browser, keyed: Server) -> Iterator[Page]:
    context = browser.new_context(
        http_credentials={"username": "anyone", "password": KEY},
        viewport={"width": 1400, "height": 1000},
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == []  # no script error on the page


def test_launch_watch_read_the_log_and_stop_from_the_page(
    page: Page, keyed: Server, tmp_path: Path
) -> None:
    page.goto(keyed.url + "/")
    expect(page.locator("#health")).to_contain_text("up")
    expect(page.locator("#gpus tbody tr")).to_have_count(2)
    page.fill("input[name=model]", "org/dashboard-model")
    page.fill("input[name=gpus]", "1")
    page.fill("input[name=args]", "--max-model-len 4096")
    page.click("button[type=submit]")
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
    page.click("button[type=submit]")
    expect(page.locator("#launch-error")).to_contain_text("7")


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
    page.goto(keyed.url + "/")
    expect(page.locator("#profiles tbody")).to_contain_text(hostile)
    assert page.evaluate("window.pwned") is None
    assert page.locator("#profiles img").count() == 0


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
