"""`vllm-bootstrap` and `vllm-bootstrap serve`: start the control plane (commands.py reads
the options; this module, with uvicorn and the app, is loaded only to serve)."""

from __future__ import annotations

import importlib.util
import logging
import sqlite3
import sys
from pathlib import Path

import uvicorn

from vllm_bootstrap.app import create_app
from vllm_bootstrap.config import GRACEFUL_SHUTDOWN_SECONDS, ConfigError, load_settings
from vllm_bootstrap.head_guard import head_guard_protocol
from vllm_bootstrap.keys import with_admin_key
from vllm_bootstrap.launches import StateStore
from vllm_bootstrap.models import ProfileFileError, declared_profiles


def serve(host: str | None, port: int | None, log_level: str) -> None:
    """Start the server; None: the setting's environment variable, or its default. A
    configuration it cannot start with exits 2 with one line."""
    try:
        settings = load_settings(host=host, port=port)
    except ConfigError as exc:
        print(f"vllm-bootstrap: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    check_cluster_extra(settings.ray_head or settings.join is not None)
    check_state_database(settings.state_db_path)
    check_declared_profiles(settings.models_file, settings.models_inline)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = with_admin_key(settings)
    if settings.join is not None:  # a worker box: a Ray node and a health check
        from vllm_bootstrap.cluster import worker_app

        uvicorn.run(worker_app(settings), host=settings.host, port=settings.port)
        return
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
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


def check_cluster_extra(wanted: bool) -> None:
    """A head or a worker runs Ray: say how to install it rather than fail later."""
    if wanted and importlib.util.find_spec("ray") is None:
        print(
            "vllm-bootstrap: configuration error: VLLM_BOOTSTRAP_RAY_HEAD and "
            "VLLM_BOOTSTRAP_JOIN need Ray: pip install 'vllm-bootstrap[cluster]'",
            file=sys.stderr,
        )
        raise SystemExit(2)


def check_state_database(path: Path) -> None:
    """Stop with one line, not a traceback, when the state database cannot be used: a file
    that is not a database, a directory we may not write, a newer schema."""
    try:
        StateStore(path).close()
    except (sqlite3.DatabaseError, OSError, RuntimeError) as exc:
        print(f"vllm-bootstrap: cannot use the state database {path}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
