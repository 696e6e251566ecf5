"""The supervisor: the registry of launches plus launch, stop, recover and shutdown.

Each live launch has a `LaunchRun` (run.py) that owns its process and its lifetime; the
supervisor admits new launches (admission.py), creates their runs, and forwards stops. All
claims happen on the event loop without an `await` between the admission decision and the
database insert, so racing requests for one GPU cannot both win; the database's lease
table backs that up.

On a cluster's head, a launch may run on another box (`LaunchSpec.node`, or placed there
when this box cannot take it): admission is the same, over that box's GPUs and owners; its
run reaches vLLM through the cluster (supervision/remote.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Callable

from vllm_bootstrap.config import Settings
from vllm_bootstrap.downloads import LaunchWeights
from vllm_bootstrap.launches import (
    Launch,
    LaunchRegistry,
    LaunchSpec,
    LaunchState,
    ResourceTaken,
    StateStore,
    StateWriteFailed,
    flag_value,
)
from vllm_bootstrap.supervision import across, admission, child, processes, recovery
from vllm_bootstrap.supervision.errors import (
    InvalidLaunch,
    LaunchRefused,
    ResourceConflict,
    Unavailable,
)
from vllm_bootstrap.supervision.gpus import (
    GPU,
    GPUDiscoveryError,
    NoNvidiaSmi,
    query_gpu_processes,
    query_gpus,
)
from vllm_bootstrap.supervision.ports import PortAllocator
from vllm_bootstrap.supervision.remote import Box, ClusterView, Fence
from vllm_bootstrap.supervision.run import LaunchRun

logger = logging.getLogger("vllm_bootstrap.supervisor")
SAVE_RETRY_SECONDS = 1.0
_ASLEEP = LaunchState.SLEEPING


class Supervisor:
    def __init__(
        self, settings: Settings, store: StateStore, weights: LaunchWeights | None = None
    ) -> None:
        self.settings = settings
        self._weights = weights
        self.registry = LaunchRegistry()
        self._store = store
        self._runs: dict[str, LaunchRun] = {}
        self._ports = PortAllocator(
            settings.launch_host, settings.launch_port_start, settings.launch_port_end
        )
        self._gpus: list[GPU] | None = None
        # Launches whose latest change could not be written yet, and the task retrying them.
        self._unsaved: dict[str, Launch] = {}
        self._save_retry: asyncio.Task[None] | None = None
        self._cluster: ClusterView | None = None

    def join_cluster(self, cluster: ClusterView) -> None:
        """On a cluster's head: launches may run on its other boxes too."""
        self._cluster = cluster

    async def detect_gpus(self, refresh: bool = False) -> list[GPU]:
        """The GPUs this server may use; the first successful answer is kept."""
        if self._gpus is None or refresh:
            self._gpus = await query_gpus()
        return self._gpus

    async def other_boxes(self) -> list[Box]:
        """On a cluster's head, its other alive boxes with their GPUs; else none."""
        return await self._cluster.other_boxes() if self._cluster is not None else []

    def gpu_owners(self, node_id: str | None = None) -> dict[int, str]:
        """GPU index -> the launch holding it (a sleeping launch holds none), on this box or
        on the cluster's node `node_id`."""
        return {
            gpu: launch.launch_id
            for launch in self._holding_gpus()
            for gpu in launch.gpus_on(node_id)
        }

    # ----------------------------------------------------------------- launch and stop

    async def launch(self, spec: LaunchSpec) -> Launch:
        # Found once, then kept; until then, asking takes a process: not on the loop.
        await asyncio.to_thread(child.check_vllm_available, self.settings)
        if spec.nodes > 1:
            return await self._launch_across(spec)
        refusals: list[tuple[Box | None, LaunchRefused]] = []
        for box in await self._boxes_for(spec.node, spec.place_anywhere):
            snapshot = (
                await self._snapshot(check_gpu_users=not spec.force)
                if box is None
                else self._box_snapshot(box)
            )
            # From the decision to the insert there is no await: the claim is atomic.
            try:
                decision = self._admit(spec, snapshot, box)
            except LaunchRefused as exc:
                refusals.append((box, exc))
                continue
            return self._claim(spec, decision, box)
        raise _refused(refusals)

    def _admit(
        self, spec: LaunchSpec, snapshot: admission.Snapshot, box: Box | None
    ) -> admission.Decision:
        here = box is None
        return admission.admit(
            admission.Request(spec.gpu_ids, spec.port, spec.force),
            snapshot,
            lambda taken: self._ports.allocate(taken, here=here),
            # Another box's ports cannot be seen from here: a busy one fails its vLLM,
            # saying so in its log.
            self._ports.is_free if here else lambda _port: True,
        )

    async def _launch_across(self, spec: LaunchSpec) -> Launch:
        """One vLLM on several boxes (its Ray executor): each box taken whole."""
        cluster = self._cluster
        if cluster is None:
            raise InvalidLaunch(
                f"nodes {spec.nodes}: this server runs alone, not as the head of a cluster "
                "(VLLM_BOOTSTRAP_RAY_HEAD); a launch across boxes needs one"
            )
        across.check_layout_args(spec.extra_args)
        head_gpus = await self._head_gpus()
        others = await cluster.other_boxes()
        # From here to the insert there is no await: the claim is atomic.
        candidates = [across.Candidate(None, head_gpus, self._owners_shown(None))]
        candidates += [
            across.Candidate(box, box.gpus, self._owners_shown(box.node_id))
            for box in others
            if not box.cpu_only
        ]
        gpus_per_node = spec.gpus_per_node or 0
        first, *rest = across.choose_boxes(candidates, spec.nodes, gpus_per_node)
        port = self._ports.allocate(
            {run.launch.port for run in self._live_runs()}, here=first.box is None
        )
        layout = across.layout_args(spec.nodes, gpus_per_node)
        driven = dataclasses.replace(
            spec,
            extra_args=[*spec.extra_args, *layout],
            env={
                **spec.env,
                "RAY_ADDRESS": cluster.address,
                "VLLM_HOST_IP": _address_of(first, cluster),
            },
        )
        decision = admission.Decision(first.gpus, port)
        others_held = {part.box.node_id: part.gpus for part in rest if part.box is not None}
        return self._claim(driven, decision, first.box, others_held)

    async def _head_gpus(self) -> list[int]:
        try:
            return [gpu.index for gpu in await self.detect_gpus()]
        except GPUDiscoveryError:
            return []

    def _claim(
        self,
        spec: LaunchSpec,
        decision: admission.Decision,
        box: Box | None,
        other_node_gpus: dict[str, list[int]] | None = None,
    ) -> Launch:
        launch = child.new_launch(
            spec, secrets.token_hex(6), decision.gpu_ids, decision.port, self.settings, box
        )
        launch.other_node_gpus = other_node_gpus or {}
        try:
            self._write_unsaved()  # an ended launch's unwritten state still holds its leases
            self._store.insert(launch)
        except ResourceTaken as exc:
            raise ResourceConflict(f"GPU or port already taken: {exc}") from None
        except StateWriteFailed as exc:
            raise Unavailable(f"{exc}: nothing was started; free space there and retry") from None
        run = self._new_run(launch)
        self.registry.add(launch)
        if not run.start():
            raise Unavailable(launch.error or "vLLM could not be started")
        return launch

    def stop(self, launch_id: str) -> Launch:
        """Begin stopping a launch; harmless for one that is stopping or has ended."""
        launch = self.registry.get(launch_id)
        run = self._runs.get(launch_id)
        if run is not None:
            run.stop()
        return launch

    def sleeping_on(self) -> dict[int, list[str]]:
        """GPU index of this box -> the sleeping launches that will want it back (one that
        was asleep and is being stopped wants nothing back)."""
        asleep: dict[int, list[str]] = {}
        for run in self._live_runs():
            launch = run.launch
            if launch.node_id is None and launch.gpus_released and launch.state is _ASLEEP:
                for gpu in run.launch.gpu_ids:
                    asleep.setdefault(gpu, []).append(run.launch.launch_id)
        return asleep

    def move(self, launch_id: str, expected: LaunchState, new: LaunchState, reason: str) -> bool:
        """Move a live launch from `expected` to `new` (the sleep-mode moves the model wing
        makes: ready -> falling_asleep -> sleeping -> waking -> ready), as one compare-and-
        swap: False, changing nothing, when it is no longer in `expected` (it crashed or was
        stopped meanwhile). Waking takes its GPUs back in the same write: ResourceConflict
        when another launch holds one of them."""
        run = self._runs.get(launch_id)
        if run is None or run.launch.state is not expected:
            return False
        if run.launch.gpus_released and new.holds_gpus:
            owners = self.gpu_owners(run.launch.node_id)
            taken = [gpu for gpu in run.launch.gpu_ids if gpu in owners]  # sleep: one box
            if taken:
                holders = sorted({owners[gpu] for gpu in taken})
                raise ResourceConflict(f"GPUs {taken} are held by {holders}")
        run.move_by_sleep_mode(new, reason)
        return True

    def note_use(self, launch: Launch, last_request_at: float | None) -> None:
        """Write a launch's idle clock so a restart keeps it; best effort."""
        launch.last_request_at = last_request_at
        with contextlib.suppress(StateWriteFailed):
            if launch.launch_id not in self._unsaved:
                self._store.save(launch)

    async def wait_until_ended(self, launch_id: str, timeout: float) -> Launch:
        launch = self.registry.get(launch_id)
        run = self._runs.get(launch_id)
        if run is not None:
            await run.wait_ended(timeout)
        return launch

    # ----------------------------------------------------------------- start-up and exit

    async def recover(self) -> None:
        """Take over the launches a previous run of the control plane left live.

        A launch whose vLLM process is still the one we started is re-adopted: it keeps its
        GPUs and port and is watched as before. Any other is failed (or stopped, if it was
        being stopped), after whatever is left of its process group has been killed.
        """
        for launch in self._store.load_all():
            self.registry.add(launch)
        try:
            self._store.reset_leases(self.registry.launches())
        except StateWriteFailed as exc:
            logger.error("%s; GPU leases could not be checked against the launches", exc)
        for launch in self.registry.launches():
            run = self._new_run(launch)
            if launch.node_id is not None:
                await run.adopt_remote()  # on another box of the cluster
                continue
            leader = recovery.find_leader(launch)
            if leader is not None:
                run.adopt(leader)  # a vLLM it started is found even if its pid was not saved
            elif run.fetching:
                run.start()  # it was downloading its model: the download resumes
            else:
                await run.settle_vanished()

    async def shutdown(self) -> None:
        """Stop every live launch and wait until each has ended.

        With VLLM_BOOTSTRAP_DETACH_ON_EXIT=1 the launches are left running instead, for the
        next start of the control plane to re-adopt.
        """
        live = list(self._live_runs())
        if self.settings.detach_on_exit:
            for run in live:
                run.detach()
            if live:
                logger.info(
                    "leaving %d launch(es) running for the next start to re-adopt "
                    "(VLLM_BOOTSTRAP_DETACH_ON_EXIT): %s",
                    len(live),
                    ", ".join(run.launch.launch_id for run in live),
                )
            self._flush_unsaved()
            return
        if live:
            logger.info("stopping %d launch(es) before exit", len(live))
        for run in live:
            run.stop()
        timeout = self.settings.stop_timeout_seconds + 10
        await asyncio.gather(*(run.wait_ended(timeout) for run in live))
        self._flush_unsaved()

    def _flush_unsaved(self) -> None:
        """One last try to write what could not be written; say so if it still cannot."""
        if self._save_retry is not None:
            self._save_retry.cancel()
        for launch in list(self._unsaved.values()):
            try:
                self._store.save(launch)
            except StateWriteFailed as exc:
                logger.error(
                    "launch %s: its last state (%s) is lost: %s",
                    launch.launch_id,
                    launch.state,
                    exc,
                )

    # ----------------------------------------------------------------- internals

    def _new_run(self, launch: Launch) -> LaunchRun:
        cluster = self._cluster
        fences = _fences(cluster, launch) if cluster and launch.across_boxes else None
        if launch.node_id is not None and cluster is not None:
            # Its weights are that box's to fetch: vLLM downloads them there.
            remote = cluster.process_of(launch)
            run = LaunchRun(launch, self.settings, self._publish, remote=remote, fences=fences)
        else:
            weights = None if launch.across_boxes else self._weights  # each box fetches its own
            run = LaunchRun(launch, self.settings, self._publish, weights, fences=fences)
        self._runs[launch.launch_id] = run
        return run

    def _publish(self, launch: Launch) -> None:
        """Every change of a launch: saved, then told to the registry's subscribers.

        What happens to processes never waits on the database: a write that fails (a full
        disk) is retried in the background until memory and database agree again.
        """
        self._save(launch)
        if launch.is_terminal:
            self._runs.pop(launch.launch_id, None)
        self.registry.changed(launch)

    def _save(self, launch: Launch) -> None:
        try:
            self._store.save(launch)
        except ResourceTaken as exc:
            # Admission and waking check ownership in memory first: this is a bug, not a race.
            logger.error(
                "launch %s: GPU lease conflict in the state database: %s", launch.launch_id, exc
            )
        except StateWriteFailed as exc:
            if not self._unsaved:
                logger.error("%s; launches go on, and their state is written once it can be", exc)
            self._unsaved[launch.launch_id] = launch
            if self._save_retry is None or self._save_retry.done():
                self._save_retry = asyncio.create_task(self._retry_saves(), name="retry-saves")
        else:
            self._unsaved.pop(launch.launch_id, None)

    async def _retry_saves(self) -> None:
        while self._unsaved:
            await asyncio.sleep(SAVE_RETRY_SECONDS)
            with contextlib.suppress(StateWriteFailed):
                self._write_unsaved()
        logger.warning("the state database is written again; memory and database agree")

    def _write_unsaved(self) -> None:
        """Write every change that could not be written yet; StateWriteFailed if one fails."""
        for launch in list(self._unsaved.values()):
            self._store.save(launch)
            self._unsaved.pop(launch.launch_id, None)

    def _live_runs(self) -> list[LaunchRun]:
        return [run for run in self._runs.values() if not run.launch.is_terminal]

    def _holding_gpus(self) -> list[Launch]:
        return [run.launch for run in self._runs.values() if run.launch.holds_gpus]

    def _owners_shown(self, node_id: str | None) -> dict[int, str]:
        """GPU index on box `node_id` -> its launch, as admission's refusals name it."""
        return {
            gpu: f"{launch.launch_id} ({launch.state})"
            for launch in self._holding_gpus()
            for gpu in launch.gpus_on(node_id)
        }

    async def _boxes_for(self, node: str | None, anywhere: bool) -> list[Box | None]:
        """Where a launch may go, in the order tried (None: this box): the node asked for,
        else this box first, then (`anywhere`) the cluster's other boxes."""
        cluster = self._cluster
        if cluster is None:
            if node is not None:
                raise InvalidLaunch(
                    f"node {node!r}: this server runs alone, not as the head of a cluster "
                    "(VLLM_BOOTSTRAP_RAY_HEAD); leave `node` out"
                )
            return [None]
        head = (cluster.head_node_id, cluster.address.rsplit(":", 1)[0])
        if (node is None and not anywhere) or (node is not None and node in head):
            return [None]
        others = await cluster.other_boxes()
        if node is None:  # a box without GPUs only when asked for by name
            return [None, *(box for box in others if not box.cpu_only)]
        chosen = [box for box in others if node in (box.node_id, box.address)]
        if not chosen:
            raise InvalidLaunch(
                f"node {node!r} is no alive node of this cluster: name one that GET /nodes "
                "lists (its node_id or address), or leave `node` out"
            )
        return chosen[:1]

    def _box_snapshot(self, box: Box) -> admission.Snapshot:
        """Admission's facts about another box: its GPUs as last read there, and who holds
        them (other processes on its GPUs are not checked from here)."""
        return admission.Snapshot(
            detected_gpus=box.gpus,
            gpu_owners=self._owners_shown(box.node_id),
            port_owners={run.launch.port: run.launch.launch_id for run in self._live_runs()},
            launch_ports=range(self.settings.launch_port_start, self.settings.launch_port_end + 1),
            cpu_only=box.cpu_only,
        )

    async def _snapshot(self, check_gpu_users: bool) -> admission.Snapshot:
        cpu_only = False
        try:
            gpus = await self.detect_gpus()
        except NoNvidiaSmi:
            gpus, cpu_only = [], True
        except GPUDiscoveryError as exc:
            raise Unavailable(str(exc)) from None
        users = await _gpu_users(gpus) if check_gpu_users and gpus else []
        live = [run.launch for run in self._live_runs()]
        return admission.Snapshot(
            detected_gpus=[gpu.index for gpu in gpus],
            gpu_owners=self._owners_shown(None),
            port_owners={launch.port: launch.launch_id for launch in live},
            our_process_groups=frozenset(
                launch.pgid for launch in live if launch.pgid is not None and not launch.node_id
            ),
            gpu_users=users,
            launch_ports=range(self.settings.launch_port_start, self.settings.launch_port_end + 1),
            cpu_only=cpu_only,
        )


def _fences(cluster: ClusterView, launch: Launch) -> Callable[[], Fence]:
    """A new fence for each start of a launch across boxes."""
    gpus_per_node = int(flag_value(launch.extra_args, "--tensor-parallel-size") or 1)
    return lambda: cluster.fence_for(launch, gpus_per_node)


def _address_of(candidate: across.Candidate, cluster: ClusterView) -> str:
    """A box's address on the private network (vLLM's multi-node guide has VLLM_HOST_IP set
    to it on every box)."""
    if candidate.box is not None:
        return candidate.box.address
    return cluster.address.rsplit(":", 1)[0]


def _refused(refusals: list[tuple[Box | None, LaunchRefused]]) -> LaunchRefused:
    """The one refusal, or this box's with each other box's reason after it."""
    (_, first), *others = refusals
    if not others:
        return first
    elsewhere = "; ".join(
        f"on node {box.node_id[:12]} ({box.address}): {exc.message}"
        for box, exc in others
        if box is not None
    )
    return type(first)(
        f"{first.message}. Nor could any other box of the cluster take it: {elsewhere}"
    )


async def _gpu_users(gpus: list[GPU]) -> list[admission.GPUUser]:
    """The processes holding memory on our GPUs, with their process group and name."""
    try:
        users = await query_gpu_processes()
    except GPUDiscoveryError as exc:
        raise Unavailable(
            f'{exc}; pass "force": true to launch without checking GPU users'
        ) from None
    index_of = {gpu.uuid: gpu.index for gpu in gpus}
    return [
        admission.GPUUser(
            gpu_index=index_of[user.gpu_uuid],
            pid=user.pid,
            process_group=processes.process_group(user.pid),
            name=processes.process_name(user.pid),
            used_memory_mib=user.used_memory_mib,
        )
        for user in users
        if user.gpu_uuid in index_of
    ]
