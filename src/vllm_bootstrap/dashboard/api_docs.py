"""GET /docs (Swagger UI) and GET /redoc (ReDoc): the API's reference pages, with every
script and style served from here (the fastapi-offline package bundles Swagger UI and
ReDoc), never from a CDN.

These pages run script on the dashboard's origin, where a browser holds the access key's
Basic credentials and passes the cross-site guard, so they get the dashboard's headers: a
Content-Security-Policy that allows this server's own files and no inline script, and no
framing. The bundled styles need inline style and ReDoc builds its search worker from a
blob, so the policy allows those two and nothing else beyond the dashboard's.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

router = APIRouter()
_OURS = {
    "docs.html": "text/html; charset=utf-8",
    "redoc.html": "text/html; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
}
_BUNDLED = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    if name in _OURS:
        return resources.files(__package__).joinpath(name).read_bytes()
    return resources.files("fastapi_offline").joinpath("static", name).read_bytes()


def _file(name: str) -> Response:
    media_type = _OURS.get(name) or _BUNDLED[name]
    return Response(_read(name), media_type=media_type, headers=_HEADERS)


@router.get("/docs", include_in_schema=False)
async def swagger_ui() -> Response:
    return _file("docs.html")


@router.get("/redoc", include_in_schema=False)
async def redoc() -> Response:
    return _file("redoc.html")


@router.get("/docs/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name not in _BUNDLED and name != "docs.js":
        raise HTTPException(404, f"no API docs file named {name!r}")
    return _file(name)
