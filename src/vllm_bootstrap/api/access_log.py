"""One log line per control-plane request that changes something or fails."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vllm_bootstrap.log_text import escaped

access_logger = logging.getLogger("vllm_bootstrap.access")


class AccessLog:
    """Launches, stops and errors at info level; reads that succeed (status polls, log
    follows) at debug level only. None per proxied request: the data plane never gets here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            quiet = scope["method"] in ("GET", "HEAD") and status < 400
            level = logging.DEBUG if quiet else logging.INFO
            if access_logger.isEnabledFor(level):
                _log(scope, status, level)


def _log(scope: Scope, status: int, level: int) -> None:
    client = scope.get("client") or ("-", 0)
    query = _without_key_values(scope.get("query_string", b"").decode("latin-1"))
    access_logger.log(
        level,
        '%s - "%s %s%s" %d',
        client[0],
        escaped(scope["method"]),
        escaped(scope["path"]),
        f"?{escaped(query)}" if query else "",
        status,
    )


def _without_key_values(query: str) -> str:
    """The query with the values of parameters named like a key hidden: `/usage?key=`
    takes a key's id or name, and a secret pasted there by mistake must not be logged."""
    if "key" not in query.lower():
        return query
    parts = []
    for part in query.split("&"):
        name, equals, _value = part.partition("=")
        parts.append(f"{name}=***" if equals and "key" in name.lower() else part)
    return "&".join(parts)
