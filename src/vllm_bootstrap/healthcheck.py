"""`python -m vllm_bootstrap.healthcheck`: the container's HEALTHCHECK.

Asks this box's own control plane for /health, with the access key when one is set (every
route needs it then), and exits 0 when it answers 200, 1 otherwise. Standard library only,
and quick: a health check runs every 30 s for the container's whole life.
"""

from __future__ import annotations

import http.client
import os
import sys

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
    port = int(os.environ.get("VLLM_BOOTSTRAP_PORT", "").strip() or "8000")
    sys.exit(0 if healthy(port, os.environ.get("VLLM_ACCESS_KEY") or None) else 1)


if __name__ == "__main__":
    main()
