"""Looking at the box: host and GPU figures (GET /stats) and Prometheus metrics (GET /metrics)."""

from vllm_bootstrap.faces import lazy_face

# What other packages may use, and the module defining each.
_FACE = {
    "GpuReadings": "gpu_readings",
    "Metrics": "metrics",
    "host_stats": "host",
}
__all__ = sorted(_FACE)
__getattr__ = lazy_face(__name__, _FACE)
