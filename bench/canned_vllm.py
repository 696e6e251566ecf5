"""A stand-in for vLLM that is faster than any proxy: nginx answering canned responses.

Started by the server as its vLLM command (VLLM_BOOTSTRAP_VLLM_COMMAND), it reads the
arguments vllm-bootstrap passes (--model, --host, --port), writes an nginx configuration and
becomes nginx (exec), so the launch's process group is nginx's. It answers what a launch
needs to be ready (GET /health, GET /v1/models) and two canned inference responses:

- POST /v1/completions: a small non-streaming completion (JSON, with a length);
- POST /v1/chat/completions: a short server-sent event stream.

Used by bench/proxy.py and bench/http_clients.py so that their figures are the proxy's own
ceiling, not the upstream's.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from harness import nginx_config, vllm_arguments

COMPLETION = {
    "id": "cmpl-bench",
    "object": "text_completion",
    "created": 0,
    "model": "{model}",
    "choices": [{"index": 0, "text": " Hi there!", "finish_reason": "length"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}
CHUNK = {"id": "chat-bench", "object": "chat.completion.chunk", "model": "{model}"}

HTTP_BLOCK = """
    keepalive_requests 1000000;
    server {{
        listen {host}:{port} reuseport;
        location = /health {{ return 200; }}
        location = /v1/models {{ default_type application/json; return 200 '{models}'; }}
        location = /v1/completions {{ default_type application/json; return 200 '{completion}'; }}
        location = /v1/chat/completions {{
            default_type text/event-stream;
            return 200 'data: {chunk}\\n\\ndata: [DONE]\\n\\n';
        }}
    }}
"""


def main() -> None:
    args = vllm_arguments()
    workdir = Path(tempfile.mkdtemp(prefix="canned-vllm-"))
    model = args.model

    def text(payload: dict[str, object]) -> str:
        return json.dumps(payload).replace("{model}", model).replace("'", "\\'")

    models = {"object": "list", "data": [{"id": model, "object": "model", "root": model}]}
    http_block = HTTP_BLOCK.format(
        host=args.host,
        port=args.port,
        models=text(models),
        completion=text(COMPLETION),
        chunk=text(CHUNK),
    )
    (workdir / "nginx.conf").write_text(nginx_config(workdir, http_block))
    print(f"canned vLLM: nginx on {args.host}:{args.port} serving {model!r}", flush=True)
    # In the foreground: nginx is the launch's process, as vLLM would be.
    os.execvp("nginx", ["nginx", "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"])


if __name__ == "__main__":
    main()
