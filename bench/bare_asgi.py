"""A bare ASGI app under uvicorn that answers every request itself: the ceiling of any proxy
served by uvicorn on this machine, measured by bench/proxy.py beside the real paths.

    python bench/bare_asgi.py PORT
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.types import Receive, Scope, Send

BODY = b'data: {"id": "bare", "choices": [{"text": " Hi"}]}\n\n'


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    headers = [(b"content-type", b"text/event-stream"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    # The server's own settings (cli.py): uvloop, httptools, no access log.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
