"""A stand-in for vLLM that answers every inference request after a fixed latency.

For bench/batch.py: a server whose throughput is set by its latency and the concurrency it
is offered, never by its own CPU (raw asyncio with httptools, one small canned answer), so
a batch runner that keeps it saturated reaches `concurrency / latency`. Started by the
control plane as its vLLM command; BENCH_LATENCY_SECONDS sets the latency (default 0.5).
"""

from __future__ import annotations

import asyncio
import json
import os

import httptools
from harness import vllm_arguments

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"


class Connection(asyncio.Protocol):
    def __init__(self, answers: dict[bytes, bytes], latency: float) -> None:
        self.answers = answers
        self.latency = latency
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        answer = self.answers.get(self.url, self.answers[b"/v1/completions"])
        inference = self.url.startswith(b"/v1/") and self.url != b"/v1/models"
        delay = self.latency if inference else 0.0
        asyncio.get_running_loop().call_later(delay, self._answer, answer)

    def _answer(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)


def answers(model: str) -> dict[bytes, bytes]:
    completion = {
        "id": "cmpl-bench",
        "object": "text_completion",
        "model": model,
        "choices": [{"index": 0, "text": " Hi there!", "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    models = {"object": "list", "data": [{"id": model, "object": "model"}]}
    pack = lambda payload: OK % (len(json.dumps(payload)), json.dumps(payload).encode())  # noqa: E731
    return {
        b"/health": OK % (0, b""),
        b"/v1/models": pack(models),
        b"/v1/completions": pack(completion),
    }


async def serve(host: str, port: int, model: str, latency: float) -> None:
    loop = asyncio.get_running_loop()
    canned = answers(model)
    server = await loop.create_server(
        lambda: Connection(canned, latency), host, port, reuse_address=True, backlog=4096
    )
    print("INFO:     Application startup complete.", flush=True)
    await server.serve_forever()


def main() -> None:
    args = vllm_arguments()
    latency = float(os.environ.get("BENCH_LATENCY_SECONDS", "0.5"))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port, args.model, latency))


if __name__ == "__main__":
    main()
