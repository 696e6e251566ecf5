"""Assembling the server: every object is built here, whole; the lifespan starts and stops.

request -> CrossSiteGuard -> AccessKeyMiddleware (and scopes) -> ServingDispatcher
             /proxy/{id}/... -> ErrorEdge -> LaunchProxy  --+--> Forwarder -> UpstreamPool
             /v1/...         -> ErrorEdge -> OpenAIRouter --+    (feeds the UsageLedger)
                  (a scoped key's requests: ErrorEdge -> KeyedTraffic -> the same apps, for
                  its limits and usage, keys/)
                  (a profile no launch serves: models/ loads it, evicting if it must)
             /v1/files, /v1/batches -> AccessLog -> batch API (batch lines go through the
                                       same router and forwarder)
             anything else   -> AccessLog -> BodySizeLimit -> FastAPI routes
Without an access key, the middleware checks the Host first (api/host_check.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from vllm_bootstrap import __version__
from vllm_bootstrap.api import (
    AccessKeyMiddleware,
    AccessLog,
    AllowedHosts,
    BodySizeLimit,
    CrossSiteGuard,
    ErrorEdge,
    HostGuard,
    LoopLagMonitor,
    Services,
    batch_api,
    download_router,
    install_error_table,
    key_router,
    launch_router,
    model_router,
    monitoring_router,
    provide_services,
    whole_schema,
)
from vllm_bootstrap.batches import (
    Batches,
    BatchStore,
    BatchYield,
    FileDirectory,
    FileExpiry,
    KeyedLines,
    ModelGates,
    RequestSender,
    RunContext,
    RunSettings,
)
from vllm_bootstrap.cluster import Cluster, NodeSpec, pid_file_in
from vllm_bootstrap.config import Settings
from vllm_bootstrap.dashboard import api_docs_router, dashboard_router
from vllm_bootstrap.downloads import Downloads, DownloadStore, LaunchWeights
from vllm_bootstrap.keys import KeyedTraffic, KeyLimits, KeyStore, UsageBook
from vllm_bootstrap.launches import StateStore
from vllm_bootstrap.models import IdleWatch, ModelSwapper, ProfileStore, declared_profiles
from vllm_bootstrap.monitoring import GpuReadings, Metrics
from vllm_bootstrap.serving import (
    DataPlane,
    Forwarder,
    HeldBodies,
    LaunchProxy,
    ModelRouter,
    OpenAIRouter,
    ServingDispatcher,
)
from vllm_bootstrap.supervision import (
    GPU,
    GPUDiscoveryError,
    LaunchRefused,
    NoNvidiaSmi,
    Supervisor,
    check_vllm_available,
    shared_memory_warning,
    vllm_start,
)
from vllm_bootstrap.upstream import UpstreamPool
from vllm_bootstrap.usage import UsageLedger

logger = logging.getLogger("vllm_bootstrap")
# Control-plane request bodies are a few hundred bytes; the proxy has no limit of its own.
MAX_API_BODY_BYTES = 1024 * 1024


def create_app(settings: Settings) -> ASGIApp:
    """The whole server, built whole: the lifespan only starts and stops what is here."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore(settings.state_db_path)
    download_store = DownloadStore(settings.state_db_path)
    downloads = Downloads(download_store, settings.download_workers, settings.disk_margin_bytes)
    supervisor = Supervisor(settings, store, LaunchWeights(downloads, settings.download_models))
    directory = supervisor.registry
    ledger = UsageLedger()
    directory.subscribe(ledger.launch_changed)
    keys = KeyStore(settings.state_db_path)
    limits = KeyLimits()
    usage = UsageBook(settings.state_db_path, settings.usage_flush_seconds)
    pool = UpstreamPool()
    metrics = Metrics(directory, ledger)
    metrics.watch_keys(usage.totals, keys.name_of, limits.in_flight_by_key)
    forwarder = Forwarder(pool, ledger, settings.access_key)
    held_bodies = HeldBodies(settings.max_held_body_bytes)
    metrics.watch_held_bodies(lambda: held_bodies.total)
    metrics.watch_downloads(downloads.under_way)
    router = ModelRouter(directory, ledger)
    profiles = ProfileStore(settings.state_db_path)
    for profile in declared_profiles(settings.models_file, settings.models_inline):
        profiles.put(profile, source="file")
    swapper = ModelSwapper(supervisor, profiles, router, ledger, pool, settings)
    swapper.wing.paid_loads.append(usage.charge_load)
    batch_store = BatchStore(settings.batch_db_path)
    files = FileDirectory(batch_store, settings.state_dir / "files", settings.max_file_bytes)
    batch_yield = BatchYield(
        ledger,
        pool,
        settings.batch_in_flight_per_launch,
        settings.batch_yield_check_seconds,
        settings.batch_yield_hold_seconds,
    )
    metrics.watch_batch_windows(batch_yield.limits)
    gates = ModelGates(router, batch_yield.window, on_demand=swapper)
    batch_yield.when_raised(gates.launches_changed)
    # After the router's own subscription, so it has seen the change when gates look.
    directory.subscribe(
        lambda _launch: asyncio.get_running_loop().call_soon(gates.launches_changed)
    )
    sender = RequestSender(router, forwarder, batch_yield, KeyedLines(keys, limits, usage))
    batches = _batch_service(settings, batch_store, files, gates, sender, metrics)
    services = Services(
        supervisor=supervisor,
        ledger=ledger,
        swapper=swapper,
        metrics=metrics,
        gpu_readings=GpuReadings(),
        loop_lag=LoopLagMonitor(),
        batches=batches,
        files=files,
        keys=keys,
        limits=limits,
        usage=usage,
        downloads=downloads,
        cluster=_cluster(settings),
    )
    if services.cluster is not None:
        supervisor.join_cluster(services.cluster)
    idle_watch = IdleWatch(swapper)
    file_expiry = FileExpiry(files, settings.file_expiry_check_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        services.loop_lag.start()
        downloads.recover()  # before the launches: those that were downloading join theirs
        if services.cluster is not None:  # before the launches: some run on other boxes
            await services.cluster.start(len(await _gpus_here(supervisor)))
        await supervisor.recover()
        await _report_environment(supervisor)
        idle_watch.start()
        swapper.start()
        batches.resume()
        batch_yield.start()
        file_expiry.start()
        usage.start()
        try:
            yield
        finally:
            await file_expiry.stop()
            await batch_yield.stop()
            await batches.shutdown()
            await usage.stop()  # after the batches: their last lines are counted too
            await idle_watch.stop()
            await swapper.close()  # no load may start a launch once the supervisor stops them
            await supervisor.shutdown()
            await downloads.shutdown()
            if services.cluster is not None:
                await services.cluster.stop(keep_running=settings.detach_on_exit)
            await services.loop_lag.stop()
            pool.close()
            store.close()
            batch_store.close()
            profiles.close()
            keys.close()
            download_store.close()

    api = FastAPI(
        title="vllm-bootstrap",
        version=__version__,
        summary="Launch, supervise and proxy vLLM servers on a GPU box.",
        # "/status/x/" names no launch; redirecting it to "/status/x" would show another.
        redirect_slashes=False,
        lifespan=lifespan,
        # FastAPI's own pages load Swagger UI from a CDN: ours serve every file themselves.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    routers = (
        launch_router,
        model_router,
        key_router,
        download_router,
        monitoring_router,
        dashboard_router,
        api_docs_router,
    )
    for routes in routers:
        api.include_router(routes)
    provide_services(api, services)
    install_error_table(api, openai_shape=False)
    batch_routes = batch_api(services)
    api.openapi = whole_schema(api, batch_routes)  # type: ignore[method-assign]
    dispatcher = ServingDispatcher(
        api=AccessLog(BodySizeLimit(api, MAX_API_BODY_BYTES)),
        proxy=_data_plane(
            LaunchProxy(directory, forwarder, settings.max_routed_body_bytes, held_bodies),
            "proxy",
            metrics,
            limits,
            usage,
        ),
        openai=_data_plane(
            OpenAIRouter(
                router,
                forwarder,
                settings.max_routed_body_bytes,
                swapper,
                held_bodies,
                settings.load_hold_seconds,
                settings.load_keepalive_seconds,
            ),
            "v1",
            metrics,
            limits,
            usage,
        ),
        batches=AccessLog(batch_routes),
    )
    return CrossSiteGuard(_who_may_enter(dispatcher, settings, keys))


def _data_plane(
    app: ASGIApp, route: str, metrics: Metrics, limits: KeyLimits, usage: UsageBook
) -> DataPlane:
    """A data-plane route, its errors rendered and refusals counted; for scoped keys, with
    their limits and usage around it too."""
    return DataPlane(
        app=ErrorEdge(app, route, metrics.refused),
        keyed=ErrorEdge(KeyedTraffic(app, limits, usage), route, metrics.refused),
    )


def _who_may_enter(app: ASGIApp, settings: Settings, keys: KeyStore) -> ASGIApp:
    """With an access key, whoever presents it or a scoped key; without one, requests naming
    this machine (a scoped key presented there is still that key, with its scopes)."""
    hosts = None
    if not settings.access_key:
        allowed = AllowedHosts.for_server(
            settings.host, settings.port, settings.allowed_hosts, settings.runpod_pod_id
        )
        hosts = HostGuard(allowed)
    return AccessKeyMiddleware(app, settings.access_key, keys, settings.public_health, hosts)


def _cluster(settings: Settings) -> Cluster | None:
    """The head's Ray node and view of the cluster; None on a box alone (no Ray)."""
    if not settings.ray_head:
        return None
    assert settings.access_key is not None  # load_settings requires it of a head
    spec = NodeSpec(
        temp_dir=settings.ray_temp_dir,
        head_port=settings.ray_port,
        node_address=settings.node_address,
        extra_args=settings.ray_start_args,
    )
    return Cluster(
        spec,
        settings.access_key,
        settings.log_dir / "ray.log",
        pid_file_in(settings.state_dir),
        settings.stop_timeout_seconds,
    )


async def _gpus_here(supervisor: Supervisor) -> list[GPU]:
    try:
        return await supervisor.detect_gpus()
    except GPUDiscoveryError:
        return []


def _batch_service(
    settings: Settings,
    store: BatchStore,
    files: FileDirectory,
    gates: ModelGates,
    sender: RequestSender,
    metrics: Metrics,
) -> Batches:
    run_settings = RunSettings(
        folder=settings.state_dir / "batches",
        model_wait_seconds=settings.batch_model_wait_seconds,
        max_line_bytes=settings.max_routed_body_bytes,
        request_timeout_seconds=settings.batch_request_timeout_seconds,
        output_retention_seconds=settings.batch_output_retention_seconds,
    )
    return Batches(
        RunContext(store, files, gates, sender, run_settings, on_outcome=metrics.batch_outcome)
    )


async def _report_environment(supervisor: Supervisor) -> None:
    """Say at start-up what a launch would find, so a misconfigured box is obvious."""
    settings = supervisor.settings
    try:
        gpus = await supervisor.detect_gpus()
        logger.info("GPUs: %s", ", ".join(f"{gpu.index} ({gpu.name})" for gpu in gpus) or "none")
    except NoNvidiaSmi:
        logger.info("GPUs: none (no nvidia-smi): launches run on the CPU, with vLLM's CPU build")
    except GPUDiscoveryError as exc:
        logger.warning("%s; POST /launch will answer 503 until this is fixed", exc)
    if (warning := shared_memory_warning()) is not None:
        logger.warning("%s", warning)
    try:
        # Asking the launches' Python which vLLM command it has takes a process: not on
        # the event loop, and once (the answer is kept).
        await asyncio.to_thread(check_vllm_available, settings)
        logger.info("vLLM starts as: %s", " ".join(vllm_start(settings)))
    except LaunchRefused as refused:
        logger.warning("%s; POST /launch will answer 503", refused.message)
    logger.info(
        "state: %s; logs: %s; vLLM ports %d-%d on %s; access key %s",
        settings.state_db_path,
        settings.log_dir,
        settings.launch_port_start,
        settings.launch_port_end,
        settings.launch_host,
        "required"
        if settings.access_key
        else "not set (every route is open to requests for this machine's names)",
    )
