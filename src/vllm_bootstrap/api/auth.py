"""The optional shared access key, checked for every route before anything else runs.

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
from vllm_bootstrap.asgi import header
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
    """Pure ASGI middleware: cheap enough for the proxy's hot path."""

    def __init__(self, app: ASGIApp, access_key: str | None) -> None:
        self.app = app
        self._key = access_key.encode() if access_key else None
        self._refusals = RefusalLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._key is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self.is_authorized(scope):
            await self.app(scope, receive, send)
            return
        self._refusals.note(scope)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_error(send, scope, _UNAUTHORIZED, _CHALLENGE)

    def is_authorized(self, scope: Scope) -> bool:
        assert self._key is not None
        authorization = header(scope, b"authorization")
        if authorization is None:
            return False
        presented = key_from_authorization(authorization)
        return presented is not None and hmac.compare_digest(presented, self._key)
