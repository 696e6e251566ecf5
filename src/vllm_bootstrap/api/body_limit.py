"""Control-plane request bodies are read up front and refused over a limit (413)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vllm_bootstrap.asgi import BodyTooLarge, ClientGone, read_body, send_json


class BodySizeLimit:
    """An oversized upload costs at most the limit in memory, whoever sends it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(receive, self.max_bytes)
        except ClientGone:
            return
        except BodyTooLarge:
            detail = (
                f"request body over {self.max_bytes} bytes: nothing this API takes is that large"
            )
            await send_json(send, 413, {"detail": detail})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
