"""A stand-in Hugging Face Hub: the endpoints huggingface_hub and vllm-bootstrap use, over a
folder of repositories, reached with HF_ENDPOINT.

    python tests/standins/hub/server.py --root DIR --port N

DIR/<org>/<name>/... holds each repository's files (any depth). One revision, "main", with
a commit id derived from the repository's name; the commit id itself is a revision too.
Files of 1 MiB or more are served as LFS files, smaller ones as plain git blobs, with the
headers the real Hub sends (X-Repo-Commit, X-Linked-Etag, X-Linked-Size, Range support).

Behaviours, read from DIR/_hub.json at each request (tests write it whenever they like):

    bandwidth_bytes_per_second  slow every file body down to this rate
    drop_after_bytes            the first GET of each file is cut after this many bytes
    gated                       repositories that need a token from `tokens` (else 401
                                with X-Error-Code: GatedRepo, as the Hub answers)
    tokens                      tokens that open gated repositories
    declared_sizes              {"org/name": bytes}: the size the metadata claims per file,
                                for a repository larger than any disk
    refuse_first_get            answer the first GET of each file with this status (503,
                                429: a CDN's passing refusal)
    listing_delay_seconds       answer each listing (model_info) this much later
    unsafe_listing              repositories whose listing names blobs "../../escaped" (a
                                hostile or broken mirror)

GET /_hub/requests lists the file GETs served so far with the Range each asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web

LFS_FROM_BYTES = 1024 * 1024
CHUNK_BYTES = 256 * 1024
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class Hub:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[dict[str, Any]] = []
        self._dropped: set[str] = set()

    def behaviour(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / "_hub.json").read_text())
        except (OSError, ValueError):
            return {}

    def repo_dir(self, repo: str) -> Path | None:
        parts = repo.split("/")
        if len(parts) != 2 or any(
            part in ("", ".", "..") or part.startswith("_") for part in parts
        ):
            return None
        folder = self.root / repo
        return folder if folder.is_dir() else None

    def files(self, repo: str, folder: Path) -> list[dict[str, Any]]:
        declared = self.behaviour().get("declared_sizes", {}).get(repo)
        entries = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            entries.append(_entry(path, path.relative_to(folder).as_posix(), declared))
        return entries


def commit_of(repo: str) -> str:
    return hashlib.sha1(f"commit of {repo}".encode()).hexdigest()


def _entry(path: Path, name: str, declared: int | None) -> dict[str, Any]:
    stat = path.stat()
    size = declared or stat.st_size
    # Ids from name, size and time: hashing gigabytes at every listing would be slow.
    identity = f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    entry: dict[str, Any] = {"path": name, "size": size, "oid": hashlib.sha1(identity).hexdigest()}
    if size >= LFS_FROM_BYTES:
        entry["lfs"] = {"oid": hashlib.sha256(identity).hexdigest(), "size": size}
    return entry


def etag_of(entry: dict[str, Any]) -> str:
    return entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": message},
        status=status,
        headers={"X-Error-Code": code, "X-Error-Message": message},
    )


def _refused(hub: Hub, request: web.Request, repo: str, revision: str) -> web.Response | None:
    """The Hub's answer when the repository or revision cannot be read, else None."""
    behaviour = hub.behaviour()
    if hub.repo_dir(repo) is None:
        return _error(401, "RepoNotFound", f"Repository Not Found for url: {request.url}.")
    if repo in behaviour.get("gated", []):
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in behaviour.get("tokens", []):
            return _error(
                401,
                "GatedRepo",
                f"Access to model {repo} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in.",
            )
    if revision not in ("main", commit_of(repo)):
        return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
    return None


async def model_info(request: web.Request) -> web.Response:
    hub: Hub = request.app["hub"]
    repo = f"{request.match_info['org']}/{request.match_info['name']}"
    revision = request.match_info.get("revision", "main")
    await asyncio.sleep(hub.behaviour().get("listing_delay_seconds", 0))
    refused = _refused(hub, request, repo, revision)
    if refused is not None:
        return refused
    siblings = []
    unsafe = repo in hub.behaviour().get("unsafe_listing", [])
    for entry in hub.files(repo, hub.repo_dir(repo)):  # type: ignore[arg-type]
        if unsafe:
            entry["oid"] = "../../escaped"
            entry.pop("lfs", None)
        sibling: dict[str, Any] = {"rfilename": entry["path"]}
        if request.query.get("blobs"):
            sibling.update(size=entry["size"], blobId=entry["oid"])
            if "lfs" in entry:
                lfs = entry["lfs"]
                sibling["lfs"] = {"sha256": lfs["oid"], "size": lfs["size"], "pointerSize": 134}
        siblings.append(sibling)
    info = {
        "id": repo,
        "modelId": repo,
        "sha": commit_of(repo),
        "private": False,
        "gated": repo in hub.behaviour().get("gated", []) and "manual",
        "siblings": siblings,
        "tags": [],
    }
    return web.json_response(info)


async def tree(request: web.Request) -> web.Response:
    hub: Hub = request.app["hub"]
    repo = f"{request.match_info['org']}/{request.match_info['name']}"
    refused = _refused(hub, request, repo, request.match_info["revision"])
    if refused is not None:
        return refused
    entries = []
    for entry in hub.files(repo, hub.repo_dir(repo)):  # type: ignore[arg-type]
        item = {"type": "file", "path": entry["path"], "size": entry["size"], "oid": entry["oid"]}
        if "lfs" in entry:
            item["lfs"] = {**entry["lfs"], "pointerSize": 134}
        entries.append(item)
    return web.json_response(entries)


async def resolve(request: web.Request) -> web.StreamResponse:
    hub: Hub = request.app["hub"]
    repo = f"{request.match_info['org']}/{request.match_info['name']}"
    refused = _refused(hub, request, repo, request.match_info["revision"])
    if refused is not None:
        return refused
    folder = hub.repo_dir(repo)
    assert folder is not None
    name = request.match_info["path"]
    path = (folder / name).resolve()
    if not path.is_file() or folder.resolve() not in path.parents:
        return _error(404, "EntryNotFound", f"{name} does not exist on main")
    entry = _entry(path, name, hub.behaviour().get("declared_sizes", {}).get(repo))
    size = path.stat().st_size
    headers = {
        "X-Repo-Commit": commit_of(repo),
        "ETag": f'"{entry["oid"]}"',
        "X-Linked-Etag": f'"{etag_of(entry)}"',
        "X-Linked-Size": str(entry["size"]),
        "Accept-Ranges": "bytes",
    }
    start, end = _byte_range(request.headers.get("Range"), size)
    if request.method == "HEAD":
        return web.Response(headers={**headers, "Content-Length": str(entry["size"])})
    hub.requests.append({"repo": repo, "path": name, "start": start})
    behaviour = hub.behaviour()
    refusal = behaviour.get("refuse_first_get")
    if refusal and f"refused {repo}/{name}" not in hub._dropped:
        hub._dropped.add(f"refused {repo}/{name}")
        return _error(refusal, "Unavailable", "the stand-in refuses once")
    if not behaviour.get("bandwidth_bytes_per_second") and "drop_after_bytes" not in behaviour:
        # As fast as the kernel can send it (sendfile), so a benchmark measures the client.
        del headers["ETag"]  # the file response sets its own; ours is X-Linked-Etag
        return web.FileResponse(path, chunk_size=CHUNK_BYTES, headers=headers)
    status = 206 if request.headers.get("Range") else 200
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = end - start
    await response.prepare(request)
    await _send(hub, request, response, path, start, end, f"{repo}/{name}")
    return response


def _byte_range(header: str | None, size: int) -> tuple[int, int]:
    match = _RANGE.match(header or "")
    if not match:
        return 0, size
    start = int(match.group(1))
    end = int(match.group(2)) + 1 if match.group(2) else size
    return min(start, size), min(end, size)


async def _send(
    hub: Hub,
    request: web.Request,
    response: web.StreamResponse,
    path: Path,
    start: int,
    end: int,
    key: str,
) -> None:
    behaviour = hub.behaviour()
    rate = behaviour.get("bandwidth_bytes_per_second")
    drop_after = behaviour.get("drop_after_bytes")
    if drop_after is not None and key in hub._dropped:
        drop_after = None
    sent = 0
    loop = asyncio.get_running_loop()
    began = loop.time()
    with path.open("rb") as file:
        file.seek(start)
        while start + sent < end:
            chunk = file.read(min(CHUNK_BYTES, end - start - sent))
            if drop_after is not None and sent + len(chunk) > drop_after:
                hub._dropped.add(key)
                await response.write(chunk[: max(0, drop_after - sent)])
                assert request.transport is not None
                request.transport.abort()  # a connection dropped mid-file
                return
            await response.write(chunk)
            sent += len(chunk)
            if rate:
                ahead = began + sent / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)


async def served_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app["hub"].requests)


def make_app(root: Path) -> web.Application:
    app = web.Application()
    app["hub"] = Hub(root)
    repo = "{org}/{name}"
    app.router.add_get("/_hub/requests", served_requests)
    app.router.add_get(f"/api/models/{repo}", model_info)
    app.router.add_get(f"/api/models/{repo}/revision/{{revision}}", model_info)
    app.router.add_get(f"/api/models/{repo}/tree/{{revision}}", tree)
    app.router.add_get(f"/api/models/{repo}/tree/{{revision}}/", tree)
    app.router.add_route("*", f"/{repo}/resolve/{{revision}}/{{path:.+}}", resolve)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    web.run_app(make_app(args.root), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
