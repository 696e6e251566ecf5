"""GET /metrics: the control plane's Prometheus metrics (prometheus_client's text format).

Forwarded requests (by route, model, launch and status) are read from the usage ledger,
which the forwarder feeds; other counters and histograms are updated where things happen:
each refusal before forwarding (by route and error code), each batch request's outcome,
each launch's start-up time. Gauges that describe the
present (launches by state, GPU memory and utilisation) are read when scraped. Label values
come from launches and served models, never from what an unauthenticated client sends.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from vllm_bootstrap.launches import Launch, LaunchDirectory, LaunchState
from vllm_bootstrap.usage import LATENCY_BUCKETS, UsageLedger

PREFIX = "vllm_bootstrap"
STARTUP_BUCKETS = (5, 10, 20, 30, 60, 120, 180, 300, 600, 900, 1800)


class Metrics:
    def __init__(self, directory: LaunchDirectory, ledger: UsageLedger) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ForwardedRequests(ledger))
        self.refusals = Counter(
            f"{PREFIX}_request_errors",
            "Requests answered with an error before reaching vLLM, by route and error code.",
            ["route", "code"],
            registry=self.registry,
        )
        self.batch_requests = Counter(
            f"{PREFIX}_batch_requests",
            "Batch request lines finished, by outcome (completed, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.startup = Histogram(
            f"{PREFIX}_launch_startup_seconds",
            "Seconds from spawning vLLM to the launch being ready.",
            buckets=STARTUP_BUCKETS,
            registry=self.registry,
        )
        self.gpus = GpuCollector()
        self.registry.register(LaunchCollector(directory))
        self.registry.register(self.gpus)
        self._ready_seen: set[str] = set()
        directory.subscribe(self._launch_changed)

    def watch_held_bodies(self, read: Callable[[], float]) -> None:
        held = Gauge(
            f"{PREFIX}_held_body_bytes",
            "Bytes of /v1 request bodies held in memory now (bounded by "
            "VLLM_BOOTSTRAP_MAX_HELD_BODY_BYTES).",
            registry=self.registry,
        )
        held.set_function(read)

    def watch_downloads(self, read: Callable[[], Iterable[tuple[str, str, int, int]]]) -> None:
        """(model, revision, bytes done, bytes in all) of each download under way."""
        self.registry.register(_Downloads(read))

    def watch_batch_windows(self, read: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """(launch_id, lines) of the launches where batches make way for live requests."""
        self.registry.register(_BatchWindows(read))

    def watch_keys(
        self,
        totals: Callable[[], Iterable[tuple[tuple[str, str], list[float]]]],
        name_of: Callable[[str], str],
        in_flight: Callable[[], Iterable[tuple[str, int]]],
    ) -> None:
        """The scoped keys' usage since start, by key name and model, and their requests
        in flight."""
        self.registry.register(_KeyUsage(totals, name_of, in_flight))

    def refused(self, route: str, code: str) -> None:
        self.refusals.labels(route, code).inc()

    def batch_outcome(self, ok: bool) -> None:
        self.batch_requests.labels("completed" if ok else "failed").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _launch_changed(self, launch: Launch) -> None:
        if launch.state is LaunchState.READY and launch.launch_id not in self._ready_seen:
            self._ready_seen.add(launch.launch_id)
            started = launch.spawned_at or launch.created_at
            if launch.ready_at and not launch.adopted:
                self.startup.observe(max(0.0, launch.ready_at - started))
        elif launch.state is LaunchState.BOOTSTRAPPING:
            self._ready_seen.discard(launch.launch_id)  # a restart's start-up counts again
        elif launch.is_terminal:
            self._ready_seen.discard(launch.launch_id)


class ForwardedRequests(Collector):
    """The usage ledger's request counters, turned into metric families when scraped."""

    def __init__(self, ledger: UsageLedger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily(
            f"{PREFIX}_requests",
            "Requests forwarded to vLLM, by route (proxy, v1, batch), model, launch and status.",
            labels=["route", "model", "launch_id", "status"],
        )
        for labels, count in self._ledger.counts():
            requests.add_metric(list(labels), count)
        yield requests
        latency = HistogramMetricFamily(
            f"{PREFIX}_request_seconds",
            "Time from forwarding a request to its last response byte, by route, model and launch.",
            labels=["route", "model", "launch_id"],
        )
        for labels, buckets in self._ledger.latencies():
            cumulative = list(itertools.accumulate(buckets[:-1]))
            bounds = [*(str(bound) for bound in LATENCY_BUCKETS), "+Inf"]
            latency.add_metric(
                list(labels), list(zip(bounds, cumulative, strict=True)), buckets[-1]
            )
        yield latency


class LaunchCollector(Collector):
    """Launches by state, counted when scraped."""

    def __init__(self, directory: LaunchDirectory) -> None:
        self._directory = directory

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{PREFIX}_launches", "Launches this control plane knows, by state.", labels=["state"]
        )
        counts = dict.fromkeys(LaunchState, 0)
        for launch in self._directory.launches(include_terminal=True):
            counts[launch.state] += 1
        for state, count in counts.items():
            family.add_metric([state.value], count)
        yield family


class _BatchWindows(Collector):
    def __init__(self, read: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{PREFIX}_batch_window_lines",
            "Batch lines a launch takes at once while batches make way for live requests "
            "there (absent: VLLM_BATCH_IN_FLIGHT_PER_LAUNCH).",
            labels=["launch_id"],
        )
        for launch_id, lines in self._read():
            family.add_metric([launch_id], lines)
        yield family


class _Downloads(Collector):
    def __init__(self, read: Callable[[], Iterable[tuple[str, str, int, int]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["model", "revision"]
        done = GaugeMetricFamily(
            f"{PREFIX}_download_bytes_done", "Bytes of each download under way.", labels=labels
        )
        total = GaugeMetricFamily(
            f"{PREFIX}_download_bytes_total",
            "Bytes each download under way fetches in all.",
            labels=labels,
        )
        for model, revision, bytes_done, bytes_total in self._read():
            done.add_metric([model, revision], bytes_done)
            total.add_metric([model, revision], bytes_total)
        yield done
        yield total


# The usage figures (keys/usage.py FIGURES order), as counters.
_KEY_FIGURES = (
    ("key_requests", "Requests of each scoped key through /v1 and /proxy, by model."),
    ("key_prompt_tokens", "Prompt tokens of each scoped key's requests and batch lines."),
    ("key_completion_tokens", "Completion tokens of each scoped key's requests and batch lines."),
    ("key_errors", "Requests and batch lines of each scoped key that ended in an error."),
    ("key_batch_lines", "Batch lines of each scoped key's batches sent to vLLM."),
    ("key_load_gpu_seconds", "GPU-seconds of model loads each scoped key's requests caused."),
)


class _KeyUsage(Collector):
    def __init__(
        self,
        totals: Callable[[], Iterable[tuple[tuple[str, str], list[float]]]],
        name_of: Callable[[str], str],
        in_flight: Callable[[], Iterable[tuple[str, int]]],
    ) -> None:
        self._totals = totals
        self._name_of = name_of
        self._in_flight = in_flight

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        families = [
            CounterMetricFamily(f"{PREFIX}_{name}", text, labels=["key", "model"])
            for name, text in _KEY_FIGURES
        ]
        for (key_id, model), figures in self._totals():
            for family, value in zip(families, figures, strict=True):
                family.add_metric([self._name_of(key_id), model], value)
        yield from families
        in_flight = GaugeMetricFamily(
            f"{PREFIX}_key_in_flight", "Requests of each scoped key in flight now.", labels=["key"]
        )
        for key_id, count in self._in_flight():
            in_flight.add_metric([self._name_of(key_id)], count)
        yield in_flight


class GpuCollector(Collector):
    """GPU gauges from the last nvidia-smi reading (GET /metrics takes one first)."""

    def __init__(self) -> None:
        self.readings: list[dict[str, Any]] = []
        self.owners: dict[int, str] = {}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauges = {
            "memory_used_bytes": ("memory_used_mib", 2**20, "GPU memory in use."),
            "memory_total_bytes": ("memory_total_mib", 2**20, "GPU memory in all."),
            "utilization_ratio": ("utilization_percent", 0.01, "GPU utilisation, 0 to 1."),
            "temperature_celsius": ("temperature_c", 1, "GPU temperature."),
            "power_watts": ("power_watts", 1, "GPU power draw."),
        }
        for name, (key, scale, help_text) in gauges.items():
            family = GaugeMetricFamily(
                f"{PREFIX}_gpu_{name}", help_text, labels=["gpu", "name", "launch_id"]
            )
            for gpu in self.readings:
                if gpu.get(key) is not None:
                    labels = [str(gpu["index"]), gpu["name"], self.owners.get(gpu["index"], "")]
                    family.add_metric(labels, gpu[key] * scale)
            yield family
