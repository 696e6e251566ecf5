"""GET / (the page), GET /dashboard/{file} (its scripts, style and icon). The files are read
once; a Content-Security-Policy keeps the page to its own scripts and this server's API."""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

router = APIRouter()
_FILES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",  # the entry module: it imports the rest
    "page.js": "text/javascript; charset=utf-8",
    "profiles.js": "text/javascript; charset=utf-8",
    "batches.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


@router.get("/", include_in_schema=False)
async def page() -> Response:
    return Response(_read("index.html"), media_type=_FILES["index.html"], headers=_HEADERS)


@router.get("/dashboard/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name not in _FILES or name == "index.html":
        raise HTTPException(404, f"no dashboard file named {name!r}")
    return Response(_read(name), media_type=_FILES[name], headers=_HEADERS)
