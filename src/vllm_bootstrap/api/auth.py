"""The optional shared access key and the scoped keys, checked for every route before
anything else runs.

Accepted as `Authorization: Bearer <key>` (what OpenAI clients send) or HTTP Basic with any
user name and the key as password (what browsers and curl -u send). Comparison is constant
time so the key cannot be guessed byte by byte from response timings.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from vllm_bootstrap.api.errors import Error, send_error
from vllm_bootstrap.api.host_check import HostGuard
from vllm_bootstrap.asgi import header, send_json
from vllm_bootstrap.keys import KEY_IN_SCOPE, ApiKey, KeyStore, required_scope
from vllm_bootstrap.log_text import escaped

logger = logging.getLogger("vllm_bootstrap.auth")
REFUSAL_LOG_SECONDS = 10.0

_UNAUTHORIZED = Error(
    401,
    "missing or wrong access key: send 'Authorization: Bearer <VLLM_ACCESS_KEY>'",
    "invalid_api_key",
)
# The connection is closed after a 401, so a client without the key cannot hold it open
# (with an endless body trickling in, say).
_CHALLENGE = [
    (b"www-authenticate", b'Basic realm="vllm-bootstrap", charset="UTF-8"'),
    (b"connection", b"close"),
]


def key_from_authorization(header: bytes) -> bytes | None:
    """The key a client presented in an Authorization header, if any."""
    scheme, _, credentials = header.strip().partition(b" ")
    scheme = scheme.lower()
    credentials = credentials.strip()
    if scheme == b"bearer":
        return credentials
    if scheme == b"basic":
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            return None
        _user, separator, password = decoded.partition(b":")
        return password if separator else None
    return None


class RefusalLog:
    """Requests refused for a missing or wrong key, logged without what they presented: the
    first at once, then at most one line every REFUSAL_LOG_SECONDS with the count since,
    so a flood of bad attempts cannot flood the log."""

    def __init__(self) -> None:
        self._last_logged = -REFUSAL_LOG_SECONDS
        self._unlogged = 0

    def note(self, scope: Scope) -> None:
        now = time.monotonic()
        self._unlogged += 1
        if now - self._last_logged < REFUSAL_LOG_SECONDS:
            return
        client = (scope.get("client") or ("-", 0))[0]
        logger.warning(
            "refused %d request(s) without a valid access key since the last such line; "
            "latest from %s for %s",
            self._unlogged,
            escaped(str(client)),
            escaped(scope.get("path", "")),
        )
        self._last_logged = now
        self._unlogged = 0


class AccessKeyMiddleware:
    """Pure ASGI middleware: cheap enough for the proxy's hot path.

    The access key opens every route. A scoped key (keys/) opens the routes of its scopes
    and is left in the ASGI scope for the layers behind to apply its models, limits and
    usage; a deleted one is gone from the lookup, so its next request is refused, on a
    kept-alive connection too. Without an access key (an open server, which the host
    check guards), a request that presents a scoped key is that key's, and one that
    presents none is let in.
    """

    def __init__(
        self,
        app: ASGIApp,
        access_key: str | None,
        keys: KeyStore,
        public_health: bool = False,
        hosts: HostGuard | None = None,
    ) -> None:
        self.app = app
        self._key = access_key.encode() if access_key else None
        self._keys = keys
        self._public_health = public_health
        self._hosts = hosts  # without an access key: only requests naming this machine
        self._refusals = RefusalLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._hosts is not None and (refusal := self._hosts.refusal(scope)) is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await send_error(send, scope, refusal)
            return
        authorization = header(scope, b"authorization")
        presented = key_from_authorization(authorization) if authorization else None
        admin = self._key
        if presented is not None and admin is not None and hmac.compare_digest(presented, admin):
            await self.app(scope, receive, send)
            return
        key = self._keys.find(presented) if presented else None
        if key is None:
            if self._key is None:
                await self.app(scope, receive, send)
            else:
                await self._refuse(scope, send, _UNAUTHORIZED)
            return
        if key.expires_at is not None and key.expired():
            await self._refuse(scope, send, _expired(key))
            return
        needed = required_scope(scope["path"])
        if needed not in key.reach:
            await send_error(send, scope, _lacks_scope(key, needed, scope["path"]))
            return
        scope[KEY_IN_SCOPE] = key
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, error: Error) -> None:
        if self._public_health and scope["path"] == "/health" and scope["type"] == "http":
            await send_json(send, 200, {"status": "ok"})
            return
        self._refusals.note(scope)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_error(send, scope, error, _CHALLENGE)


def _expired(key: ApiKey) -> Error:
    return Error(401, f"the key {key.name!r} expired at {key.expires_at}", "expired_api_key")


def _lacks_scope(key: ApiKey, needed: str, path: str) -> Error:
    return Error(
        403,
        f"the key {key.name!r} lacks the {needed!r} scope that {path[:200]} needs "
        f"(it has: {', '.join(sorted(key.scopes))})",
        "insufficient_scope",
    )
