"""`vllm-bootstrap` and `vllm-bootstrap serve`: start the control plane."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sqlite3
import sys
from pathlib import Path

import uvicorn

from vllm_bootstrap import __version__
from vllm_bootstrap.app import create_app
from vllm_bootstrap.config import GRACEFUL_SHUTDOWN_SECONDS, ConfigError, load_settings
from vllm_bootstrap.head_guard import head_guard_protocol
from vllm_bootstrap.keys import with_admin_key
from vllm_bootstrap.launches import StateStore
from vllm_bootstrap.models import ProfileFileError, declared_profiles


def serve(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="vllm-bootstrap serve", description="Launch, supervise and proxy vLLM servers."
    )
    parser.add_argument(
        "--host", help="address to listen on (env VLLM_BOOTSTRAP_HOST; default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, help="port to listen on (env VLLM_BOOTSTRAP_PORT)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)

    try:
        settings = load_settings(host=args.host, port=args.port)
    except ConfigError as exc:
        print(f"vllm-bootstrap: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    check_state_database(settings.state_db_path)
    check_declared_profiles(settings.models_file, settings.models_inline)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = with_admin_key(settings)
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


def check_declared_profiles(path: Path | None, inline: str | None) -> None:
    """Stop with one line when the models file or VLLM_BOOTSTRAP_MODELS has an error: which
    profile, which field (or which name both define)."""
    try:
        declared_profiles(path, inline)
    except ProfileFileError as exc:
        print(f"vllm-bootstrap: model profiles: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def check_state_database(path: Path) -> None:
    """Stop with one line, not a traceback, when the state database cannot be used: a file
    that is not a database, a directory we may not write, a newer schema."""
    try:
        StateStore(path).close()
    except (sqlite3.DatabaseError, OSError, RuntimeError) as exc:
        print(f"vllm-bootstrap: cannot use the state database {path}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
