"""`python -m vllm_bootstrap.healthcheck`: the container's HEALTHCHECK.

Asks this box's own control plane for /health, with the access key when one is set (every
route needs it then), or the admin key the server made at its first start (keys/admin_key.py)
when none is, and exits 0 when it answers 200, 1 otherwise. Standard library and the
settings only, and quick: a health check runs every 30 s for the container's whole life.
"""

from __future__ import annotations

import http.client
import sys

from vllm_bootstrap.config import ConfigError, load_settings

TIMEOUT_SECONDS = 5.0


def healthy(port: int, key: str | None) -> bool:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("GET", "/health", headers=headers)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError:
        sys.exit(1)  # the server cannot be running with these settings either
    key = settings.access_key
    if key is None and settings.admin_key_path.is_file():
        key = settings.admin_key_path.read_text().strip() or None
    sys.exit(0 if healthy(settings.port, key) else 1)


if __name__ == "__main__":
    main()
