"""A stand-in for vLLM that loads slowly, for bench/readiness.py.

Sleeps for BENCH_LOAD_SECONDS as a model load would, then answers GET /health and
GET /v1/models and prints the instant it began to ("answering HTTP since <unix time>"),
followed by uvicorn's "Application startup complete." line that vLLM prints too. With
BENCH_BIND_EARLY=1 it listens from the start but leaves connections unanswered until
loaded, as older vLLM builds did; otherwise connections are refused while loading.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time

from harness import vllm_arguments

HEALTH = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


def models_response(model: str) -> bytes:
    body = json.dumps({"object": "list", "data": [{"id": model, "object": "model"}]}).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def serve(sock: socket.socket, model: str) -> None:
    models = models_response(model)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                writer.write(models if b" /v1/models " in head.split(b"\r\n", 1)[0] else HEALTH)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    print(f"standin: answering HTTP since {time.time():.6f}", flush=True)
    print("INFO:     Application startup complete.", flush=True)
    await server.serve_forever()


def main() -> None:
    args = vllm_arguments()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if os.environ.get("BENCH_BIND_EARLY") == "1":
        sock.bind((args.host, args.port))
        sock.listen(128)  # connections queue up unanswered while "loading"
    time.sleep(float(os.environ.get("BENCH_LOAD_SECONDS", "1.5")))
    if os.environ.get("BENCH_BIND_EARLY") != "1":
        sock.bind((args.host, args.port))
        sock.listen(128)
    asyncio.run(serve(sock, args.model))


if __name__ == "__main__":
    main()
