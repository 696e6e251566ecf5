"""Without an access key, only requests for a Host that names this machine are answered.

A keyless server trusts whoever reaches its port, but a web page the user opens can reach
it too: DNS rebinding points the attacker's own name (attacker.example) at this machine, so
the page's requests are same-origin to the browser and pass the cross-site guard, even to a
server bound to 127.0.0.1. What such a request cannot hide is its Host header: it names the
attacker's domain. So without a key, the Host must be

- an IP address (a rebinding attack needs a name; a browser that sends `Host: 10.0.0.5`
  connected to 10.0.0.5 on purpose), or `localhost` and its subdomains (browsers resolve
  those to loopback themselves);
- the address the server was told to bind, or this machine's host name;
- Runpod's proxy name for this pod and port (`<RUNPOD_POD_ID>-<port>.proxy.runpod.net`);
- or one of VLLM_BOOTSTRAP_ALLOWED_HOSTS (`name`, `.suffix` for a domain and its
  subdomains, or `*` for any).

Anything else gets 403 saying which Host was refused and how to allow it. With a key set
the key decides, and this check is not installed at all.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Iterable

from starlette.types import Scope

from vllm_bootstrap.api.errors import Error
from vllm_bootstrap.asgi import header
from vllm_bootstrap.log_text import escaped

logger = logging.getLogger("vllm_bootstrap.hosts")
REFUSAL_LOG_SECONDS = 10.0
_ANY = "*"
# Verdicts kept per Host header; bounded, since anyone may send any Host.
_REMEMBERED_VERDICTS = 256


class AllowedHosts:
    def __init__(self, names: Iterable[str]) -> None:
        listed = {host_name(name) or name for name in names if name}
        self.any = _ANY in listed
        self._suffixes = tuple(name for name in listed if name.startswith("."))
        self._names = frozenset(name for name in listed if not name.startswith("."))
        self._verdicts: dict[bytes, bool] = {}

    @classmethod
    def for_server(
        cls, bound: str, port: int, listed: Iterable[str], runpod_pod_id: str | None
    ) -> AllowedHosts:
        names = [*listed, bound, socket.gethostname()]
        if runpod_pod_id:
            names.append(f"{runpod_pod_id}-{port}.proxy.runpod.net")
        return cls(names)

    def allows(self, host: bytes) -> bool:
        verdict = self._verdicts.get(host)
        if verdict is None:
            if len(self._verdicts) >= _REMEMBERED_VERDICTS:
                self._verdicts.clear()
            verdict = self._verdicts[host] = self._judge(host.decode("latin-1"))
        return verdict

    def _judge(self, host: str) -> bool:
        if self.any:
            return True
        name = host_name(host)
        if name is None:
            return False
        if name == "localhost" or name.endswith(".localhost") or _is_address(name):
            return True
        # ".lab.example" stands for lab.example and every name under it.
        return name in self._names or f".{name}".endswith(self._suffixes)


def host_name(host: str) -> str | None:
    """The name or address a Host header gives, without its port, in lower case and
    without a trailing dot; None when it is not a host at all."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        address, bracket, _port = host[1:].partition("]")
        return address if bracket and _is_address(address) else None
    name, _colon, port = host.partition(":")
    if port and not port.isdigit():
        return None
    name = name.rstrip(".")
    if not name or not all(char.isalnum() or char in "-._" for char in name):
        return None
    return name


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostGuard:
    """The Host check itself, as a call: the access-key middleware makes it first when the
    server has no access key (one layer, not two, on every request's way in)."""

    def __init__(self, allowed: AllowedHosts) -> None:
        self._allowed = allowed
        self._last_logged = -REFUSAL_LOG_SECONDS
        self._unlogged = 0

    def refusal(self, scope: Scope) -> Error | None:
        """Why the request may not be answered; None when it may."""
        host = header(scope, b"host")
        # No Host at all is not a browser (every browser sends one): nothing to rebind.
        if host is None or self._allowed.allows(host):
            return None
        shown = host.decode("latin-1")
        self._note(shown)
        return _refusal(shown)

    def _note(self, host: str) -> None:
        """One log line at most every REFUSAL_LOG_SECONDS, with the count since."""
        now = time.monotonic()
        self._unlogged += 1
        if now - self._last_logged < REFUSAL_LOG_SECONDS:
            return
        logger.warning(
            "refused %d request(s) for a Host this server does not answer without an access "
            "key since the last such line; latest Host %s",
            self._unlogged,
            escaped(host[:200]),
        )
        self._last_logged = now
        self._unlogged = 0


def _refusal(host: str) -> Error:
    shown = host[:200]
    return Error(
        403,
        f"Host {shown!r} is not a name of this machine, and without an access key this "
        "server answers only those (a web page could otherwise drive it through DNS "
        "rebinding): set VLLM_ACCESS_KEY, or add the name to VLLM_BOOTSTRAP_ALLOWED_HOSTS",
        "host_not_allowed",
    )
