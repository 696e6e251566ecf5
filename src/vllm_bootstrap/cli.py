"""`vllm-bootstrap`: start the control plane."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys

import uvicorn

from vllm_bootstrap import __version__
from vllm_bootstrap.app import create_app
from vllm_bootstrap.config import ConfigError, load_settings
from vllm_bootstrap.head_guard import head_guard_protocol

# In-flight requests (long streams) get this long after SIGTERM before the launches stop.
GRACEFUL_SHUTDOWN_SECONDS = 5


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vllm-bootstrap", description="Launch, supervise and proxy vLLM servers."
    )
    parser.add_argument("--host", help="address to listen on (env VLLM_BOOTSTRAP_HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (env VLLM_BOOTSTRAP_PORT)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)

    try:
        settings = load_settings(host=args.host, port=args.port)
    except ConfigError as exc:
        print(f"vllm-bootstrap: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        # uvicorn's httptools protocol with limits on the request head's size and time.
        http=head_guard_protocol(settings),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # A log line per proxied request would cost a fifth of the proxy's throughput;
        # the API routes log their own requests (app.AccessLog).
        access_log=False,
    )


if __name__ == "__main__":
    main()
