"""Refusing changes that another web site makes a browser send (cross-site request forgery).

A browser that has opened the dashboard keeps its Basic credentials and sends them with any
request to this server, also one that another site's page starts: a POST with no
Content-Type needs no CORS preflight, so without this check a page elsewhere could start a
launch. Browsers say where a request comes from (`Sec-Fetch-Site`, `Origin`); a request
that changes something (any method but GET, HEAD, OPTIONS) and says it comes from another
site is refused with 403. Clients that are not browsers send neither header and pass.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from vllm_bootstrap.api.errors import Error, send_error

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FOREIGN_FETCH_SITES = frozenset({b"cross-site", b"same-site"})


class CrossSiteGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _SAFE_METHODS:
            reason = foreign_origin(scope["headers"])
            if reason is not None:
                message = f"refused: {reason}; changes must come from this server's own pages"
                await send_error(send, scope, Error(403, message, "cross_site_request"))
                return
        await self.app(scope, receive, send)


def foreign_origin(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why the request comes from another site, or None (this site, or not a browser).

    `Sec-Fetch-Site` is the browser's own verdict and survives proxies that rewrite Host
    (Runpod's, say): it decides when present. Older browsers send only `Origin`, which is
    compared with the Host the request names (or the proxy's X-Forwarded-Host).
    """
    fetch_site = origin = None
    hosts: list[bytes] = []
    for name, value in headers:
        if name == b"sec-fetch-site":
            fetch_site = value.strip().lower()
        elif name == b"origin":
            origin = value.strip()
        elif name in (b"host", b"x-forwarded-host"):
            hosts.append(value.strip().lower())
    if fetch_site is not None:
        if fetch_site in _FOREIGN_FETCH_SITES:
            return f"the browser says the request is {fetch_site.decode('latin-1')}"
        return None
    if origin is None:
        return None
    netloc = urlsplit(origin.decode("latin-1")).netloc.lower().encode("latin-1")
    if origin == b"null" or netloc not in hosts:
        return "its Origin is another site's"
    return None
