"""Addresses of vLLM servers on this machine, as a client must write them."""

from __future__ import annotations


def probe_host(bind_host: str) -> str:
    """The address to reach a server bound to `bind_host` from this machine."""
    if bind_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind_host == "::":
        return "::1"
    return bind_host


def url_host(host: str) -> str:
    """`host` as it appears in a URL or a Host header (IPv6 addresses go in brackets)."""
    return f"[{host}]" if ":" in host else host
