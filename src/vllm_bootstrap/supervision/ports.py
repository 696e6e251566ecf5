"""Choosing ports for vLLM children."""

from __future__ import annotations

import socket
from collections.abc import Collection

from vllm_bootstrap.supervision.errors import Unavailable


def is_port_free(host: str, port: int) -> bool:
    """Whether a server could bind `host:port` now.

    SO_REUSEADDR matches what vLLM's server sets, so a port whose last connections linger in
    TIME_WAIT counts as free, as it is for vLLM.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Hands out ports from a range, round-robin, so a port that a stopped launch just gave
    back is the last to be reused."""

    def __init__(self, host: str, start: int, end: int) -> None:
        self.host = host
        self.start = start
        self.end = end
        self._cursor = start

    def allocate(self, taken: Collection[int], here: bool = True) -> int:
        """The next port after the last one handed out that is neither taken nor busy (on
        this box; `here=False` for a launch on another box, which this one cannot see)."""
        span = self.end - self.start + 1
        for step in range(span):
            port = self.start + (self._cursor - self.start + step) % span
            if port not in taken and (not here or is_port_free(self.host, port)):
                self._cursor = self.start + (port - self.start + 1) % span
                return port
        raise Unavailable(
            f"no free port left in VLLM_LAUNCH_PORT_START..VLLM_LAUNCH_PORT_END "
            f"({self.start}-{self.end}): the range is exhausted; stop a launch or widen the range"
        )

    def is_free(self, port: int) -> bool:
        return is_port_free(self.host, port)
