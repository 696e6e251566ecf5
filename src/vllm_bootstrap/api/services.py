"""The services the routes use, built whole by `create_app` and handed to every route as
one typed dependency (`ServicesDep`): `provide` binds an app's routes to its services
through FastAPI's dependency system, so nothing is looked up by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI

from vllm_bootstrap.api.loop_lag import LoopLagMonitor
from vllm_bootstrap.batches import Batches, FileDirectory
from vllm_bootstrap.cluster import Cluster
from vllm_bootstrap.downloads import Downloads
from vllm_bootstrap.keys import KeyLimits, KeyStore, UsageBook
from vllm_bootstrap.launches import Launch, iso_time
from vllm_bootstrap.models import ModelSwapper
from vllm_bootstrap.monitoring import GpuReadings, Metrics
from vllm_bootstrap.supervision import Supervisor
from vllm_bootstrap.usage import UsageLedger


@dataclass(frozen=True)
class Services:
    supervisor: Supervisor
    ledger: UsageLedger
    swapper: ModelSwapper
    metrics: Metrics
    gpu_readings: GpuReadings
    loop_lag: LoopLagMonitor
    batches: Batches
    files: FileDirectory
    keys: KeyStore
    limits: KeyLimits
    usage: UsageBook
    downloads: Downloads
    cluster: Cluster | None = None  # on the head of several boxes (cluster/)

    def launch_view(self, launch: Launch) -> dict[str, object]:
        """A launch as the API shows it, with its use from the ledger (every route)."""
        return {
            **launch.to_public(),
            "last_request_at": iso_time(self.ledger.last_request_at(launch)),
            "in_flight": self.ledger.in_flight(launch.launch_id),
        }


def _services() -> Services:
    raise RuntimeError("this app's routes were not given their services (api.services.provide)")


ServicesDep = Annotated[Services, Depends(_services)]


def provide(app: FastAPI, services: Services) -> None:
    """Every route of `app` that asks for ServicesDep gets `services`."""
    app.dependency_overrides[_services] = lambda: services
