"""The data plane's error responses: the control plane's shape under /proxy, OpenAI's under /v1."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import Send

from vllm_bootstrap.asgi import send_json

RETRY_AFTER_SECONDS = "10"
_KINDS = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}

ErrorResponder = Callable[[Send, int, str, str], Awaitable[None]]


async def plain_error(send: Send, status: int, message: str, _code: str = "") -> None:
    """The control plane's own error shape, for /proxy (the code is for /v1's shape)."""
    await send_json(send, status, {"detail": message})


async def openai_error(
    send: Send, status: int, message: str, code: str, retry_after: bool = False
) -> None:
    """The error shape OpenAI's clients parse into NotFoundError, APIStatusError, ..."""
    kind = _KINDS.get(status, "server_error")
    headers = [(b"retry-after", RETRY_AFTER_SECONDS.encode())] if retry_after else []
    payload = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    await send_json(send, status, payload, headers)
