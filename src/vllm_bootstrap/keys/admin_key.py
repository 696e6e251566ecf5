"""The safe default: a server that listens beyond loopback never runs open by accident.

Without VLLM_ACCESS_KEY, a server listening on another address than loopback makes an
admin key at its first start, keeps it in the state directory (readable by this user only)
and prints it once, with how to use it; later starts read it back and say where it lies.
VLLM_BOOTSTRAP_NO_KEY=1 is how a user says an open server is really wanted (warned about
at every start).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import sys
from pathlib import Path

from vllm_bootstrap.config import Settings
from vllm_bootstrap.keys.record import new_secret

logger = logging.getLogger("vllm_bootstrap.keys")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    return False


def with_admin_key(settings: Settings) -> Settings:
    """`settings` with the access key a server listening at its address must have."""
    if settings.access_key or is_loopback(settings.host):
        return settings
    if settings.no_key:
        logger.warning(
            "listening on %s with no access key (VLLM_BOOTSTRAP_NO_KEY=1): anyone who can "
            "reach this port can launch processes on this machine",
            settings.host,
        )
        return settings
    path = settings.admin_key_path
    kept = path.read_text().strip() if path.is_file() else ""
    if kept:
        logger.info("access key: the admin key made at first start, kept in %s", path)
        return dataclasses.replace(settings, access_key=kept)
    key = new_secret()
    _keep(key, path)
    # Printed once, here, and never logged again: later starts name the file only.
    print(
        f"vllm-bootstrap: no VLLM_ACCESS_KEY was set and the server listens on "
        f"{settings.host}, so an admin key was made and kept in {path} (mode 0600):\n\n"
        f"    {key}\n\n"
        f"Send it as 'Authorization: Bearer <key>' (OpenAI clients: api_key=<key>), or set "
        f"VLLM_ACCESS_KEY to choose your own. This is the only time it is shown.",
        file=sys.stderr,
        flush=True,
    )
    return dataclasses.replace(settings, access_key=key)


def _keep(key: str, path: Path) -> None:
    """Written whole or not at all (a temporary file, synced, then renamed): a full disk
    must never leave an empty key file that a later start would take for no key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(key + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
