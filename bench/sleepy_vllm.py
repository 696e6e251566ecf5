"""A stand-in for vLLM with sleep mode, for bench/swap.py: it takes fixed times and no CPU.

Loads for BENCH_LOAD_SECONDS (refusing connections meanwhile), then answers GET /health,
GET /v1/models, POST /v1/completions (a canned answer), and vLLM's sleep routes: POST
/sleep takes BENCH_SLEEP_SECONDS, POST /wake_up BENCH_WAKE_SECONDS. Exits at once on
SIGTERM. The benchmark subtracts these times to find what the control plane adds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

from harness import vllm_arguments

COMPLETION = json.dumps(
    {
        "object": "text_completion",
        "choices": [{"index": 0, "text": " ok", "finish_reason": "length"}],
    }
).encode()


def response(body: bytes, status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
    return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body


async def serve(host: str, port: int, names: list[str]) -> None:
    models = json.dumps(
        {"object": "list", "data": [{"id": name, "object": "model"} for name in names]}
    ).encode()
    sleep_seconds = float(os.environ.get("BENCH_SLEEP_SECONDS", "0.1"))
    wake_seconds = float(os.environ.get("BENCH_WAKE_SECONDS", "0.3"))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, _, headers = head.partition(b"\r\n")
                length = 0
                for line in headers.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                target = request_line.split(b" ")[1]
                if target.startswith(b"/sleep"):
                    await asyncio.sleep(sleep_seconds)
                    answer = response(b'{"status": "sleeping", "level": 1}')
                elif target.startswith(b"/wake_up"):
                    await asyncio.sleep(wake_seconds)
                    answer = response(b'{"status": "awake", "tags": null}')
                elif target == b"/v1/models":
                    answer = response(models)
                elif target.startswith(b"/v1/"):
                    answer = response(COMPLETION)
                else:
                    answer = response(b"")
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, host, port, reuse_address=True)
    print("INFO:     Application startup complete.", flush=True)
    await server.serve_forever()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    args = vllm_arguments()
    time.sleep(float(os.environ.get("BENCH_LOAD_SECONDS", "3")))
    asyncio.run(serve(args.host, args.port, args.served_model_name or [args.model]))


if __name__ == "__main__":
    main()
