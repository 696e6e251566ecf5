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
import logging
import secrets

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
)
from vllm_bootstrap.supervision import across, admission, child, facts, placement, recovery
from vllm_bootstrap.supervision.errors import (
    InvalidLaunch,
    LaunchRefused,
    ResourceConflict,
    Unavailable,
)
from vllm_bootstrap.supervision.gpus import (
    GPU,
    GPUDiscoveryError,
    query_gpus,
)
from vllm_bootstrap.supervision.ports import PortAllocator
from vllm_bootstrap.supervision.records import LaunchRecords
from vllm_bootstrap.supervision.remote import Box, ClusterView
from vllm_bootstrap.supervision.run import LaunchRun

logger = logging.getLogger("vllm_bootstrap.supervisor")
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
        self._records = LaunchRecords(store)
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
        for box in await placement.boxes_for(self._cluster, spec.node, spec.place_anywhere):
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
        raise placement.refused(refusals)

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
        candidates = across.candidates(head_gpus, others, self._owners_shown)
        first, *rest = across.choose_boxes(candidates, spec.nodes, spec.gpus_per_node or 0)
        port = self._ports.allocate(
            {run.launch.port for run in self._live_runs()}, here=first.box is None
        )
        decision = admission.Decision(first.gpus, port)
        others_held = {part.box.node_id: part.gpus for part in rest if part.box is not None}
        driven = across.driver_spec(spec, first, cluster)
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
            self._records.write_waiting()  # an ended launch's unwritten state holds its leases
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
        self._records.save_if_current(launch)

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
            self._records.flush()
            return
        if live:
            logger.info("stopping %d launch(es) before exit", len(live))
        for run in live:
            run.stop()
        timeout = self.settings.stop_timeout_seconds + 10
        await asyncio.gather(*(run.wait_ended(timeout) for run in live))
        self._records.flush()

    # ----------------------------------------------------------------- internals

    def _new_run(self, launch: Launch) -> LaunchRun:
        cluster = self._cluster
        fences = across.fences(cluster, launch) if cluster and launch.across_boxes else None
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

        What happens to processes never waits on the database (records.py).
        """
        self._records.save(launch)
        if launch.is_terminal:
            self._runs.pop(launch.launch_id, None)
        self.registry.changed(launch)

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

    def _box_snapshot(self, box: Box) -> admission.Snapshot:
        live = [run.launch for run in self._live_runs()]
        return facts.of_other_box(box, self._owners_shown(box.node_id), live, self._port_range)

    async def _snapshot(self, check_gpu_users: bool) -> admission.Snapshot:
        return await facts.of_this_box(
            self.detect_gpus,
            lambda: self._owners_shown(None),
            lambda: [run.launch for run in self._live_runs()],
            self._port_range,
            check_gpu_users,
        )

    @property
    def _port_range(self) -> range:
        return range(self.settings.launch_port_start, self.settings.launch_port_end + 1)
