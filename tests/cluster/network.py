"""Boxes on a private network, on this machine: each box a network namespace of its own,
joined to a bridge by a veth pair, with an address that exists only here. The test process
reaches them through the bridge; Ray, started inside a box, advertises the box's address,
as it would on a rented box (here, Ray outside a namespace advertised the machine's own
interface address even when told 127.0.0.1). Root only (`ip netns`, from iproute2)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Box:
    namespace: str
    address: str


def usable() -> str | None:
    """Why private networks cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def private_network(count: int) -> Iterator[list[Box]]:
    """`count` boxes on 10.213.N.0/24 (N random, so runs side by side do not meet); all
    of it removed on the way out."""
    tag = secrets.token_hex(2)  # interface names are at most 15 characters
    subnet = f"10.213.{secrets.randbelow(250) + 1}"
    bridge = f"vbbr{tag}"
    boxes = [Box(f"vb{tag}box{index}", f"{subnet}.{10 + index}") for index in range(count)]
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for index, box in enumerate(boxes):
            outside = f"vb{tag}v{index}"
            _ip("netns", "add", box.namespace)
            _ip(
                "link",
                "add",
                outside,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                box.namespace,
            )
            _ip("link", "set", outside, "master", bridge)
            _ip("link", "set", outside, "up")
            _ip("-n", box.namespace, "addr", "add", f"{box.address}/24", "dev", "eth0")
            _ip("-n", box.namespace, "link", "set", "eth0", "up")
            _ip("-n", box.namespace, "link", "set", "lo", "up")
        yield boxes
    finally:
        for box in boxes:
            subprocess.run(["ip", "netns", "del", box.namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
