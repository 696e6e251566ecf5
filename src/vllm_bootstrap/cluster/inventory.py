"""The head's view of the cluster: its Ray node, the control plane's connection to Ray (a
driver), and what each node has (read by node_readings.py, at most once a second).

Ray's calls block: they run in threads, never on the event loop, and the driver's global
state (connect, read, disconnect) is used by one thread at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vllm_bootstrap.cluster.fence import BoxFence, FenceTurns
from vllm_bootstrap.cluster.launch_actor import NAMESPACE
from vllm_bootstrap.cluster.node_readings import READ_TIMEOUT_SECONDS, NodeView, read_nodes
from vllm_bootstrap.cluster.ray_env import ray_environment
from vllm_bootstrap.cluster.ray_node import NodeSpec, RayNode
from vllm_bootstrap.cluster.remote_launch import RemoteLaunch
from vllm_bootstrap.launches import Launch
from vllm_bootstrap.supervision import Box

logger = logging.getLogger("vllm_bootstrap.cluster")
CONNECT_TIMEOUT_SECONDS = 60.0
FRESH_SECONDS = 1.0
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
DRIVER_PATIENCE_SECONDS = 10 * 365 * 24 * 3600
RECONNECT_TIMEOUT_VARIABLE = "RAY_gcs_rpc_server_reconnect_timeout_s"  # Ray spells it so


class Cluster:
    """Started and stopped by the head's lifespan; `nodes()` for the routes."""

    def __init__(
        self, spec: NodeSpec, access_key: str, log_path: Path, pid_file: Path, grace: float
    ) -> None:
        self._spec = spec
        self._access_key = access_key
        self._log_path = log_path
        self._pid_file = pid_file
        self._grace = grace
        self.node: RayNode | None = None
        self._head_node_id: str | None = None
        self.address = f"{spec.node_address or '127.0.0.1'}:{spec.head_port}"
        self._reading = asyncio.Lock()
        self._read_at = -FRESH_SECONDS
        self._last: list[NodeView] = []
        # Ray's driver state is global: connecting, reading and disconnecting take turns.
        self._ray_calls = threading.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._fence_turns = FenceTurns()

    async def start(self, gpu_count: int) -> None:
        """Connect to the head's Ray node: the one a previous run of the control plane left
        running (its workers and their launches live on), else a new one declaring
        `gpu_count` GPUs."""
        spec = dataclasses.replace(self._spec, gpu_count=gpu_count)
        self.node = node = RayNode(spec, self._access_key, self._log_path, self._pid_file)
        if not await self._take_over_leftover(node):
            _check_port_free(spec.node_address, spec.head_port)
            node.start()
            try:
                await asyncio.to_thread(self._connect)
            except BaseException:
                await asyncio.to_thread(node.stop, self._grace)  # never a head left behind
                raise
        self._watcher = asyncio.create_task(self._keep_running(node), name="ray-head")

    async def _take_over_leftover(self, node: RayNode) -> bool:
        if not await asyncio.to_thread(node.adopt_leftover):
            return False
        try:
            await asyncio.to_thread(self._connect)
        except Exception as exc:  # a head that no longer answers: a new one replaces it
            logger.warning("the Ray head node a previous run left does not answer (%s)", exc)
            await asyncio.to_thread(self._disconnect)
            await asyncio.to_thread(node.stop, self._grace)
            return False
        return True

    async def stop(self, keep_running: bool = False) -> None:
        """Disconnect, and stop the head's Ray node, unless `keep_running`
        (VLLM_BOOTSTRAP_DETACH_ON_EXIT): then the next start takes it over, with the
        launches on other boxes."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await asyncio.to_thread(self._disconnect)
        if self.node is not None and not keep_running:
            await asyncio.to_thread(self.node.stop, self._grace)

    async def _keep_running(self, node: RayNode) -> None:
        """The head's Ray node ended on its own (killed, out of memory): say why, start it
        again and connect anew; the server stays up meanwhile (/nodes says Ray is down)."""
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            code = await asyncio.to_thread(node.wait)
            logger.error(
                "the Ray head node ended with code %s (%s); starting it again in %g s",
                code,
                node.log_tail(),
                backoff,
            )
            await asyncio.to_thread(self._disconnect)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            await asyncio.to_thread(node.stop, 0)  # reap it, and what is left of its group
            node.start()
            try:
                await asyncio.to_thread(self._connect)
            except Exception as exc:  # it failed again: the next turn of the loop says why
                logger.error("the Ray head node did not come back: %s", exc)

    @property
    def head_node_id(self) -> str | None:
        return self._head_node_id

    async def other_boxes(self) -> list[Box]:
        """The alive nodes besides the head's, with their GPUs (for placing launches)."""
        views = await self.nodes([])
        return [view.as_box() for view in views if view.alive and not view.head]

    def process_of(self, launch: Launch) -> RemoteLaunch:
        return RemoteLaunch(launch)

    def fence_for(self, launch: Launch, gpus_per_node: int) -> BoxFence:
        return BoxFence(launch, self._head_node_id, gpus_per_node, self._fence_turns)

    async def nodes(
        self,
        local_gpus: list[dict[str, Any]],
        owners: Callable[[str], dict[int, str]] | None = None,
    ) -> list[NodeView]:
        """Every node Ray knows; the head's GPUs are `local_gpus` (read by the head), and
        `owners(node_id)` names the launch holding each GPU of another node. Read at most
        once a second, however many clients ask (each reading runs a task on every node)."""
        async with self._reading:
            if time.monotonic() - self._read_at >= FRESH_SECONDS:
                self._last = await self._read_nodes()
                self._read_at = time.monotonic()
            views = [dataclasses.replace(view) for view in self._last]
        for view in views:
            if view.head:
                view.gpus = local_gpus
            elif owners is not None:
                held = owners(view.node_id)
                view.gpus = [{**gpu, "launch_id": held.get(gpu["index"])} for gpu in view.gpus]
        return views

    async def _read_nodes(self) -> list[NodeView]:
        """The nodes as Ray sees them; when Ray cannot say (its head gone, or hung), the
        head alone, saying so, rather than an error for the whole page."""
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._nodes), READ_TIMEOUT_SECONDS + FRESH_SECONDS
            )
        except Exception as exc:
            why = f"the cluster's nodes could not be read from Ray: {type(exc).__name__}"
            logger.warning("%s", why)
            head_id = self._head_node_id or ""
            return [NodeView(head_id, self.address, alive=True, head=True, error=why)]

    # ----------------------------------------------------------------- in threads

    def _connect(self) -> None:
        # The driver is a Ray process like the nodes: it presents the token too (read by
        # Ray once, as it is imported).
        os.environ.update(ray_environment(self._access_key))
        # Ray's crash handler would take SIGTERM too: after logging it, it ends the process
        # midway through our graceful shutdown (the launches, the Ray node left running).
        os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"
        # Ray ends a driver whose head stays unreachable for a minute: this one is the
        # server, which stays up and starts its Ray node again (_keep_running).
        os.environ[RECONNECT_TIMEOUT_VARIABLE] = str(DRIVER_PATIENCE_SECONDS)
        import ray  # the cluster extra: imported by a head alone

        self._wait_for_head()
        with self._ray_calls:
            ray.init(
                address=self.address,
                namespace=NAMESPACE,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
        self._head_node_id = ray.get_runtime_context().get_node_id()
        if self._spec.node_address is None:
            # What the other boxes reach (a launch across boxes joins here), not loopback.
            self.address = f"{ray.util.get_node_ip_address()}:{self._spec.head_port}"
        logger.info("Ray head at %s: this box is node %s", self.address, self._head_node_id)

    def _wait_for_head(self) -> None:
        """Until the head's port takes connections (ray.init would wait a minute for a head
        that will never come, where `ray start` may have failed at once)."""
        host, port = self.address.rsplit(":", 1)
        deadline = time.monotonic() + CONNECT_TIMEOUT_SECONDS
        while True:
            if self.node is None or not self.node.running:
                raise RuntimeError(f"the Ray head node could not start: {self._why_it_ended()}")
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 1):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Ray head node took no connections on {self.address} within "
                    f"{CONNECT_TIMEOUT_SECONDS:g} s: {self._why_it_ended()}"
                )
            time.sleep(0.2)

    def _why_it_ended(self) -> str:
        tail = self.node.log_tail() if self.node is not None else ""
        return f"its log ({self._log_path}) ends with: {tail}" if tail else f"see {self._log_path}"

    def _disconnect(self) -> None:
        import ray

        with self._ray_calls:
            if ray.is_initialized():
                ray.shutdown()

    def _nodes(self) -> list[NodeView]:
        with self._ray_calls:
            return read_nodes(self._head_node_id)


def _check_port_free(address: str | None, port: int | None) -> None:
    """Refuse a Ray port that something else listens on (another Ray, a Redis on 6379):
    our head would fail, and its port would seem to answer."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds
        try:
            probe.bind((address or "0.0.0.0", port or 0))
        except OSError as exc:
            raise RuntimeError(
                f"VLLM_BOOTSTRAP_RAY_PORT {port} is in use on this box ({exc.strerror}): "
                "stop what listens there, or choose another port"
            ) from None
