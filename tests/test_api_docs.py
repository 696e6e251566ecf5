"""/docs and /redoc: the API's reference pages load every file from this server, under the
dashboard's headers (they run script on its origin, where the browser holds the key). The
pages themselves are rendered in a real browser in test_dashboard.py."""

from __future__ import annotations

import re

import pytest

from tests.harness import Server

SCRIPT_OR_STYLE = re.compile(r'(?:src|href)="([^"]+)"')


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_a_docs_page_loads_only_this_servers_files_and_cannot_be_framed(
    server: Server, path: str
) -> None:
    page = server.client.get(path)
    assert page.status_code == 200
    assert "//" not in page.text.replace("<!--", "")  # no CDN, no other origin at all
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy  # no inline script, no other origin's
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    files = SCRIPT_OR_STYLE.findall(page.text)
    assert files, "the page names no script or style"
    for file in files:
        assert file.startswith("/docs/"), file
        served = server.client.get(file)
        assert served.status_code == 200, file
        assert served.headers["content-security-policy"] == policy
        assert len(served.content) > 0


def test_the_swagger_ui_page_starts_on_this_servers_openapi_document(server: Server) -> None:
    script = server.client.get("/docs/docs.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert 'url: "/openapi.json"' in script.text
    assert server.client.get("/openapi.json").json()["info"]["title"] == "vllm-bootstrap"


@pytest.mark.parametrize("name", ["docs.html", "index.html", "..%2Fapi_docs.py", "nothing.js"])
def test_only_the_docs_files_are_served_under_docs(server: Server, name: str) -> None:
    refused = server.client.get(f"/docs/{name}")
    assert refused.status_code == 404
    assert "import" not in refused.text


def test_the_openapi_document_describes_every_kind_of_route(server: Server) -> None:
    document = server.client.get("/openapi.json").json()
    paths = document["paths"]
    # The control plane, the Files and Batches API, and the data plane in front of them.
    for path, method in [
        ("/launch", "post"),
        ("/downloads", "post"),
        ("/models/{name}", "put"),
        ("/v1/files", "post"),
        ("/v1/files/{file_id}/content", "get"),
        ("/v1/batches", "post"),
        ("/v1/batches/{batch_id}/cancel", "post"),
        ("/v1/models", "get"),
        ("/v1/chat/completions", "post"),
        ("/v1/completions", "post"),
        ("/v1/embeddings", "post"),
        ("/proxy/{launch_id}/{path}", "post"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} is not described"
    routed = paths["/v1/chat/completions"]["post"]
    assert routed["requestBody"]["content"]["application/json"]["schema"]["required"] == ["model"]
    assert routed["externalDocs"]["url"].startswith("https://platform.openai.com/docs/")
    assert "content" in paths["/v1/files"]["post"]["requestBody"]  # multipart, described
    schemes = document["components"]["securitySchemes"]
    assert {scheme["scheme"] for scheme in schemes.values()} == {"bearer", "basic"}
    assert document["security"] == [{name: []} for name in schemes]
    assert server.client.get("/openapi.json").json() == document  # built once, kept
