"""Stand-in for `python -m vllm.entrypoints.openai.api_server`.

What it shares with vLLM, as far as the control plane can tell:
- no HTTP answers until the model has "loaded" (FAKE_VLLM_LOAD_SECONDS, default 1): the port
  refuses connections meanwhile (current vLLM), or with FAKE_VLLM_BIND_EARLY=1 is bound
  early and leaves connections hanging (older vLLM);
- vLLM's process tree: an EngineCore child that starts a Worker child of its own, all in
  the API server's process group;
- log lines in vLLM 0.32's format, including its start-up steps with their progress bars
  (checkpoint shards, torch.compile, memory profiling, CUDA graph capture), "Starting vLLM
  server on ..." and uvicorn's "Application startup complete.";
- /health, /v1/models, /v1/completions, /v1/chat/completions (SSE when streaming, with a
  last usage chunk when stream_options.include_usage asks for it, as vLLM),
  /v1/embeddings and /metrics (with vLLM's running and waiting gauges); a clean exit on
  SIGTERM;
- its scheduler (scheduling.py): at most --max-num-seqs requests run at once, the rest wait
  (fcfs, or by priority with --scheduling-policy priority) and are dropped if their client
  goes first.

Failures are chosen by the model name:
- "crash-on-start": dies during loading with a RuntimeError traceback;
- "crash-after-ready": serves, then dies with a CUDA out-of-memory error after
  FAKE_VLLM_CRASH_AFTER_SECONDS (default 1);
- "ignore-sigterm": it and its EngineCore ignore SIGTERM;
- "slow-start": loads for FAKE_VLLM_SLOW_LOAD_SECONDS (default 60);
- "escape-group": starts a helper in a session of its own, outside the process group;
- "small-shm": dies at start-up as vLLM does in a container with a 64 MiB /dev/shm.

Sleep mode as vLLM 0.32 has it: with --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1, POST
/sleep?level=1|2&mode=abort (FAKE_VLLM_SLEEP_SECONDS, default 0.1), POST /wake_up
(FAKE_VLLM_WAKE_SECONDS, default 0.3) and GET /is_sleeping. Without VLLM_SERVER_DEV_MODE
those routes do not exist (404); without --enable-sleep-mode /sleep fails as vLLM's engine
does. While asleep, inference requests are refused with 503.

Test-only extras: ANY /debug/echo/... describes the request it received; GET
/debug/status/{code} answers that status with a Content-Length;
FAKE_VLLM_TOKEN_DELAY_SECONDS spaces streamed tokens out; FAKE_VLLM_LATENCY_SECONDS makes
every non-streaming answer take that long (given up when the client goes, as vLLM aborts);
GET /debug/stats says how many requests ran at once at most, run and wait now, finished,
and were aborted, how many were let in ahead of each prompt while it waited,
how often each prompt was seen (a prompt is the request's last message or its prompt), how
often as the first request on its connection (a client's replay on a fresh one shows), and
with which `priority` last (non-zero ones are refused with 400 unless the server runs with
--scheduling-policy priority, as vLLM does);
a model named "flaky..." answers 503 to the first two tries of each X-Request-Id, one
named "resets..." drops the connection of every inference request unanswered, and one
named "wedged..." takes every non-streaming inference request and never answers it (until
the client goes: then it counts it as aborted, as vLLM aborts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from datetime import datetime

from aiohttp import web

from vllm.entrypoints.openai.scheduling import Scheduler

VERSION = "0.0.0+standin"


def log(message: str, source: str = "api_server.py:1", level: str = "INFO") -> None:
    """A line in vLLM 0.32's format: "(APIServer pid=N) INFO 11-26 23:42:31 [file:line] ..."."""
    stamp = datetime.now().strftime("%m-%d %H:%M:%S")
    print(f"(APIServer pid={os.getpid()}) {level} {stamp} [{source}] {message}", flush=True)


def _engine_config_line(args: argparse.Namespace) -> str:
    """vLLM's one very long line of engine settings (a few kilobytes), as it prints at
    every start: a log's tail read from a byte offset often begins inside it."""
    settings = {
        "model": repr(args.model),
        "speculative_config": "None",
        "tokenizer": repr(args.model),
        "skip_tokenizer_init": "False",
        "tokenizer_mode": "auto",
        "revision": "None",
        "trust_remote_code": "False",
        "dtype": "torch.bfloat16",
        "max_seq_len": "4096",
        "download_dir": "None",
        "load_format": "auto",
        "tensor_parallel_size": str(args.tensor_parallel_size),
        "pipeline_parallel_size": "1",
        "enforce_eager": "False",
        "kv_cache_dtype": "auto",
        "device_config": "cuda",
        "seed": "0",
        "served_model_name": repr(args.served_model_name or args.model),
        "enable_prefix_caching": "True",
        "compilation_config": "{" + ", ".join(f"'level_{n}': None" for n in range(120)) + "}",
    }
    joined = ", ".join(f"{name}={value}" for name, value in settings.items())
    return f"Initializing a V1 LLM engine (v{VERSION}) with config: {joined}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    parser.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    parser.add_argument("--distributed-executor-backend", choices=["mp", "ray", "uni"])
    parser.add_argument("--served-model-name", nargs="+")
    parser.add_argument("--enable-sleep-mode", action="store_true")
    parser.add_argument("--scheduling-policy", choices=["fcfs", "priority"], default="fcfs")
    parser.add_argument("--max-num-seqs", type=int, default=256)
    args, _unknown = parser.parse_known_args(argv)
    return args


class StandinServer:
    ray_nodes: list[str] | None = None  # with the Ray executor: each worker's box

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.model = args.model
        self.names = args.served_model_name or [args.model]
        self.token_delay = float(os.environ.get("FAKE_VLLM_TOKEN_DELAY_SECONDS", "0"))
        self.latency = float(os.environ.get("FAKE_VLLM_LATENCY_SECONDS", "0"))
        self.requests_total = 0
        self.scheduler = Scheduler(args.max_num_seqs, args.scheduling_policy == "priority")
        self.aborted = 0
        self.prompts: dict[str, int] = {}
        self.fresh_prompts: dict[str, int] = {}  # those that came first on their connection
        # How many requests were let in ahead of each prompt while it waited (the last time).
        self.let_in_ahead: dict[str, int] = {}
        self.priorities: dict[str, int] = {}  # the last priority each prompt came with
        self.tries: dict[str, int] = {}
        self.site: web.BaseSite | None = None
        self.runner: web.AppRunner | None = None
        self.background: set[asyncio.Task] = set()
        self.sleeping_level = 0  # 0: awake
        self.sleeps = 0
        self.wakes = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_route("*", "/debug/echo{tail:.*}", self.echo)
        app.router.add_get("/debug/reset", self.reset)
        app.router.add_get("/debug/stats", self.stats)
        app.router.add_get("/debug/abort-mid-stream", self.abort_mid_stream)
        app.router.add_get("/debug/status/{code:\\d+}", self.status_with_length)
        app.router.add_post("/debug/stop-listening", self.stop_listening)
        if os.environ.get("VLLM_SERVER_DEV_MODE") == "1":
            app.router.add_post("/sleep", self.sleep)
            app.router.add_post("/wake_up", self.wake_up)
            app.router.add_get("/is_sleeping", self.is_sleeping)
        return app

    async def sleep(self, request: web.Request) -> web.Response:
        try:
            level = int(request.query.get("level", "1"))
        except ValueError:
            level = -1
        if level not in (0, 1, 2):
            return web.json_response({"detail": "level must be 0, 1 or 2"}, status=422)
        if not self.args.enable_sleep_mode:
            return web.json_response(
                {
                    "error": {
                        "message": "Sleep mode is not enabled: pass --enable-sleep-mode",
                        "type": "InternalServerError",
                        "code": 500,
                    }
                },
                status=500,
            )
        await asyncio.sleep(float(os.environ.get("FAKE_VLLM_SLEEP_SECONDS", "0.1")))
        self.sleeping_level = max(level, 1)
        self.sleeps += 1
        log(f"It took 0.10 seconds to fall asleep (level {level}).", "gpu_worker.py:1")
        return web.json_response({"status": "sleeping", "level": level})

    async def wake_up(self, request: web.Request) -> web.Response:
        if self.sleeping_level:
            await asyncio.sleep(float(os.environ.get("FAKE_VLLM_WAKE_SECONDS", "0.3")))
            self.sleeping_level = 0
            self.wakes += 1
            log("It took 0.30 seconds to wake up tags ['weights', 'kv_cache'].", "gpu_worker.py:2")
        return web.json_response({"status": "awake", "tags": None})

    async def is_sleeping(self, request: web.Request) -> web.Response:
        return web.json_response({"is_sleeping": bool(self.sleeping_level)})

    def _asleep(self) -> web.Response | None:
        if not self.sleeping_level:
            return None
        return web.json_response(
            {
                "error": {
                    "message": "the engine is sleeping",
                    "type": "ServiceUnavailable",
                    "code": 503,
                }
            },
            status=503,
        )

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        created = int(time.time())
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": self.model,
                "parent": None,
                "max_model_len": 4096,
            }
            for name in self.names
        ]
        return web.json_response({"object": "list", "data": data})

    def _model_error(self, body: dict) -> web.Response | None:
        requested = body.get("model")
        if requested is None or requested in self.names:
            return None
        return web.json_response(
            {
                "error": {
                    "message": f"The model `{requested}` does not exist.",
                    "type": "NotFoundError",
                    "param": None,
                    "code": 404,
                }
            },
            status=404,
        )

    async def _body(self, request: web.Request) -> dict | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response(
                {"error": {"message": "invalid JSON", "type": "BadRequestError", "code": 400}},
                status=400,
            )
        if not isinstance(body, dict):
            return {}
        limit = body.get("max_tokens")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            # As vLLM's request validation answers it.
            message = "max_tokens: Input should be a valid integer"
            return web.json_response(
                {"error": {"message": message, "type": "BadRequestError", "code": 400}},
                status=400,
            )
        return body

    def _tokens(self, body: dict) -> list[str]:
        count = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        return [f" tok{i}" for i in range(max(0, count))]

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        if (
            error := self._asleep() or self._model_error(body) or self._note(request, body)
        ) is not None:
            return error
        tokens = self._tokens(body)
        if body.get("stream"):
            return await self._stream(
                request,
                body,
                "text_completion",
                tokens,
                lambda t, f: {"text": t, "finish_reason": f},
            )
        if not await self._generate(request, len(tokens)):
            return web.Response(status=499)
        self.requests_total += 1
        return web.json_response(
            {
                "id": f"cmpl-{self.requests_total}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body.get("model", self.names[0]),
                "choices": [
                    {
                        "index": 0,
                        "text": "".join(tokens),
                        "finish_reason": "length",
                        "logprobs": None,
                    }
                ],
                "usage": _usage(body.get("prompt"), tokens),
            }
        )

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        if (
            error := self._asleep() or self._model_error(body) or self._note(request, body)
        ) is not None:
            return error
        tokens = self._tokens(body)
        if body.get("stream"):
            return await self._stream(
                request,
                body,
                "chat.completion.chunk",
                tokens,
                lambda t, f: {"delta": {"role": "assistant", "content": t}, "finish_reason": f},
            )
        if not await self._generate(request, len(tokens)):
            return web.Response(status=499)
        self.requests_total += 1
        return web.json_response(
            {
                "id": f"chatcmpl-{self.requests_total}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", self.names[0]),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(tokens)},
                        "finish_reason": "length",
                    }
                ],
                "usage": _usage(body.get("messages"), tokens),
            }
        )

    async def _generate(self, request: web.Request, token_count: int) -> bool:
        """Wait for a place among the running (--max-num-seqs), then take
        FAKE_VLLM_LATENCY_SECONDS and token_delay per token, as a non-streaming generation
        does; like vLLM, give up as soon as the client has gone. False when it went away."""
        steps = [self.latency] if self.latency else []
        steps += [self.token_delay] * token_count if self.token_delay else []
        if "wedged" in self.model:  # alive and accepting, never answering
            steps = [365 * 86_400.0]
        if not await self._enter(request):
            self.aborted += 1
            return False
        try:
            for step in steps:
                transport = request.transport
                if transport is None or transport.is_closing():
                    self.aborted += 1
                    return False
                await _sleep_watching(request, step)
            transport = request.transport
            if steps and (transport is None or transport.is_closing()):
                self.aborted += 1
                return False
            return True
        finally:
            self.scheduler.leave()

    async def _enter(self, request: web.Request) -> bool:
        """A place among the running; False when the client went while it waited."""
        ahead = await self.scheduler.enter(request, request.get("priority", 0))
        if ahead is None:
            return False
        self.let_in_ahead[request.get("prompt_key", "")] = ahead
        return True

    def _note(self, request: web.Request, body: dict) -> web.Response | None:
        """Count the prompt and its priority (refused, as vLLM does, when not 0 without
        --scheduling-policy priority); for a "flaky" model, refuse the first two tries."""
        messages = body.get("messages")
        prompt = messages[-1].get("content") if isinstance(messages, list) and messages else None
        prompt = prompt if prompt is not None else body.get("prompt", body.get("input"))
        key = json.dumps(prompt)
        priority = body.get("priority", 0)
        if priority != 0 and self.args.scheduling_policy != "priority":
            message = f"Got priority {priority} but Priority scheduling is not enabled."
            return web.json_response({"error": {"message": message, "code": 400}}, status=400)
        self.priorities[key] = priority
        request["priority"], request["prompt_key"] = priority, key
        self.prompts[key] = self.prompts.get(key, 0) + 1
        # aiohttp counts a connection's requests (a private name: asserted, not guessed at)
        assert hasattr(request.protocol, "_request_count"), "aiohttp renamed _request_count"
        if request.protocol._request_count == 1:
            self.fresh_prompts[key] = self.fresh_prompts.get(key, 0) + 1
        if "resets" in self.model and request.transport is not None:
            request.transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        if "flaky" in self.model:
            request_id = request.headers.get("X-Request-Id", "")
            self.tries[request_id] = self.tries.get(request_id, 0) + 1
            if self.tries[request_id] <= 2:
                return web.json_response({"error": {"message": "busy", "code": 503}}, status=503)
        return None

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "peak_running": self.scheduler.peak_running,
                "running": self.scheduler.running,
                "waiting": self.scheduler.waiting,
                "let_in_ahead": self.let_in_ahead,
                "requests_total": self.requests_total,
                "aborted": self.aborted,
                "prompts": self.prompts,
                "fresh_prompts": self.fresh_prompts,
                "priorities": self.priorities,
                "sleeps": self.sleeps,
                "wakes": self.wakes,
                "pid": os.getpid(),
                "ray_nodes": self.ray_nodes,
            }
        )

    async def _stream(self, request, body, object_name, tokens, choice) -> web.StreamResponse:
        self.requests_total += 1
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)  # as vLLM: the head at once, tokens once it runs
        if not await self._enter(request):
            self.aborted += 1
            return response
        created = int(time.time())
        try:
            for index, token in enumerate(tokens):
                finish = "length" if index == len(tokens) - 1 else None
                event = {
                    "id": f"stream-{self.requests_total}",
                    "object": object_name,
                    "created": created,
                    "model": self.names[0],
                    "choices": [{"index": 0, **choice(token, finish)}],
                }
                await response.write(f"data: {json.dumps(event)}\n\n".encode())
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
            options = body.get("stream_options")
            if isinstance(options, dict) and options.get("include_usage"):
                # As vLLM: one last chunk with no choices and the whole request's usage.
                prompt = body.get("messages", body.get("prompt"))
                usage = {
                    "id": f"stream-{self.requests_total}",
                    "object": object_name,
                    "created": created,
                    "model": self.names[0],
                    "choices": [],
                    "usage": _usage(prompt, tokens),
                }
                await response.write(f"data: {json.dumps(usage)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        finally:
            self.scheduler.leave()
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        if (
            error := self._asleep() or self._model_error(body) or self._note(request, body)
        ) is not None:
            return error
        if not await self._generate(request, 0):
            return web.Response(status=499)
        self.requests_total += 1
        inputs = body.get("input", "")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = [
            {"object": "embedding", "index": index, "embedding": _embedding(str(text))}
            for index, text in enumerate(inputs)
        ]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", self.names[0]),
                "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        name = self.names[0]
        lines = [
            "# HELP vllm:num_requests_running Number of requests currently running on GPU.",
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{model_name="{name}"}} {self.scheduler.running}',
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f'vllm:num_requests_waiting{{model_name="{name}"}} {self.scheduler.waiting}',
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
            f'vllm:request_success_total{{model_name="{name}"}} {self.requests_total}',
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def reset(self, request: web.Request) -> web.Response:
        """Drop the connection without answering, as a crashing server would."""
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    async def abort_mid_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"partial": true}\n\n')
        await asyncio.sleep(0.2)
        assert request.transport is not None
        request.transport.abort()
        return response

    async def status_with_length(self, request: web.Request) -> web.StreamResponse:
        """A bodiless status (204, 304) sent with a Content-Length, as some servers do."""
        code = int(request.match_info["code"])
        response = web.StreamResponse(status=code, headers={"Content-Length": "0"})
        await response.prepare(request)
        return response

    async def stop_listening(self, request: web.Request) -> web.Response:
        """Close the listening socket and the kept-alive connections (as a vLLM that went
        away would): later connections are refused, the process lives."""
        task = asyncio.create_task(self._close_site())
        self.background.add(task)
        return web.json_response({"listening": False})

    async def _close_site(self) -> None:
        await asyncio.sleep(0.05)  # this request's answer goes out first
        if self.site is not None:
            await self.site.stop()  # then no connection comes in after those closed below
        if self.runner is not None:
            for connection in self.runner.server.connections if self.runner.server else []:
                if connection.transport is not None:
                    connection.transport.close()

    async def echo(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        length = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            length += len(chunk)
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "raw_path": request.raw_path,
                "query_string": request.query_string,
                "headers": [[key, value] for key, value in request.headers.items()],
                "body_length": length,
                "body_sha256": digest.hexdigest(),
            },
            headers={"X-Standin-Echo": "1"},
        )


async def _sleep_watching(request: web.Request, seconds: float) -> None:
    """Sleep, waking early when the client's connection closes."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(min(left, 0.05))


def _usage(prompt: object, tokens: list[str]) -> dict[str, int]:
    prompt_tokens = len(json.dumps(prompt).split()) if prompt is not None else 0
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(tokens),
        "total_tokens": prompt_tokens + len(tokens),
    }


def _embedding(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(byte / 255.0, 4) for byte in digest[:8]]


async def load_like_vllm(model: str, seconds: float, stop: asyncio.Event) -> None:
    """Spend `seconds` as vLLM's start-up does, printing its progress lines: the weights
    (a tqdm bar of 4 shards, \r between updates), torch.compile, memory profiling, CUDA
    graph capture (another bar) and the engine's summary. Returns early on SIGTERM."""
    lines: list[tuple[str, str]] = [(f"Starting to load model {model}...", "\n")]
    lines += [
        (f"Loading safetensors checkpoint shards: {done * 25:3d}% Completed | {done}/4", end)
        for done, end in ((0, "\r"), (1, "\r"), (2, "\r"), (3, "\r"), (4, "\n"))
    ]
    lines += [
        ("Model loading took 0.01 GiB memory and 0.5 seconds", "\n"),
        ("Dynamo bytecode transform time: 0.40 s", "\n"),
        ("Memory profiling takes 0.20 seconds.", "\n"),
    ]
    lines += [
        (f"Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): {done * 25:3d}%|", end)
        for done, end in ((1, "\r"), (2, "\r"), (4, "\n"))
    ]
    lines.append(("init engine (profile, create kv cache, warmup model) took 1.0 s", "\n"))
    step = seconds / len(lines)
    for text, end in lines:
        print(text, end=end, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), step)
        if stop.is_set():
            return


def start_engine_core(ignore_sigterm: bool) -> subprocess.Popen:
    env = dict(os.environ)
    if ignore_sigterm:
        env["STANDIN_IGNORE_SIGTERM"] = "1"
    return subprocess.Popen([sys.executable, "-m", "vllm.v1.engine.core"], env=env)


def start_helper_outside_the_group() -> subprocess.Popen:
    """A helper in a session of its own (as a plugin calling setsid() might start): only the
    launch marker in its environment still ties it to the launch."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )


async def serve(args: argparse.Namespace) -> None:
    model = args.model
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if "ignore-sigterm" in model:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)

    early_socket = None
    if os.environ.get("FAKE_VLLM_BIND_EARLY"):
        # Older vLLM: the port is bound (and connections queue, unanswered) during loading.
        early_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        early_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        early_socket.bind((args.host, args.port))
        early_socket.listen(128)

    ray_workers = None
    if args.distributed_executor_backend == "ray":
        from vllm.executor.ray_utils import initialize_ray_cluster

        world_size = args.tensor_parallel_size * args.pipeline_parallel_size
        log(f"Connecting to existing Ray cluster at address: {os.environ.get('RAY_ADDRESS')}")
        ray_workers = await asyncio.to_thread(initialize_ray_cluster, world_size)
        StandinServer.ray_nodes = ray_workers.node_ids
        log(f"Ray workers placed on nodes {ray_workers.node_ids}", "ray_utils.py:1")
    engine = start_engine_core(ignore_sigterm="ignore-sigterm" in model)
    log(f"Started engine process with PID {engine.pid}", "core_client.py:1")
    if "escape-group" in model:
        escaped = start_helper_outside_the_group()
        log(f"helper left the process group: pid={escaped.pid}", "standin.py:1")
    log(
        f"Loading model {model} on {args.tensor_parallel_size} GPU(s) "
        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})",
        "gpu_model_runner.py:1",
    )

    if "slow-start" in model:
        load_seconds = float(os.environ.get("FAKE_VLLM_SLOW_LOAD_SECONDS", "60"))
    else:
        load_seconds = float(os.environ.get("FAKE_VLLM_LOAD_SECONDS", "1"))
    if "small-shm" in model:
        print(
            "RuntimeError: Insufficient space in /dev/shm for shared-memory allocation: "
            "160 MiB required, 62 MiB free",
            flush=True,
        )
        sys.exit(1)
    if "crash-on-start" in model:
        await asyncio.sleep(min(load_seconds, 0.3))
        raise RuntimeError("stand-in crash during start-up (the model name asked for it)")
    await load_like_vllm(model, load_seconds, stop)
    if stop.is_set():
        log("Shutting down before the model finished loading")
        return
    log(f"Model loading took {load_seconds:.2f} seconds", "gpu_model_runner.py:2")

    server = StandinServer(args)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    log(f"Starting vLLM server on http://{args.host}:{args.port}", "entry.py:140")
    log("Available routes are:", "launcher.py:186")
    if early_socket is not None:
        site: web.BaseSite = web.SockSite(runner, early_socket)
    else:
        site = web.TCPSite(runner, args.host, args.port, reuse_address=True)
    await site.start()
    server.site, server.runner = site, runner
    # Not a vLLM line: lets benchmarks measure how fast the control plane notices readiness.
    print(f"standin: answering HTTP since {time.time():.6f}", flush=True)
    print(f"INFO:     Started server process [{os.getpid()}]", flush=True)
    print("INFO:     Waiting for application startup.", flush=True)
    print("INFO:     Application startup complete.", flush=True)

    if "crash-after-ready" in model:
        await asyncio.sleep(float(os.environ.get("FAKE_VLLM_CRASH_AFTER_SECONDS", "1")))
        log("EngineCore encountered a fatal error.", "core.py:1", level="ERROR")
        print(
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB. "
            "GPU 0 has a total capacity of 79.19 GiB",
            flush=True,
        )
        os._exit(1)
    await stop.wait()
    log("Shutting down FastAPI HTTP server.")
    await runner.cleanup()
    engine.terminate()
    engine.wait()
    if ray_workers is not None:
        ray_workers.remove()


def main() -> None:
    """`python -m vllm.entrypoints.openai.api_server`: vLLM 0.32 still runs it, warning."""
    log(
        "The `python -m vllm.entrypoints.openai.api_server` command is deprecated and will "
        "likely be unsupported in a future version. Please use `vllm serve` instead.",
        "api_server.py:1",
        level="WARNING",
    )
    run(sys.argv[1:])


def run(argv: list[str]) -> None:
    args = parse_args(argv)
    log(f"vLLM API server version {VERSION}")
    log(_engine_config_line(args), "core.py:1", level="INFO")
    log(f"non-default args: {{'model': {args.model!r}, 'port': {args.port}}}", "utils.py:1")
    try:
        asyncio.run(serve(args))
    except RuntimeError:
        traceback.print_exc()
        sys.stdout.flush()
        sys.exit(1)


if __name__ == "__main__":
    main()
