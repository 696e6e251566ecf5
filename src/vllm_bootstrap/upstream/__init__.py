"""Our HTTP/1.1 client for vLLM servers on this machine: the proxy's and the probes'."""

from vllm_bootstrap.upstream.addresses import probe_host
from vllm_bootstrap.upstream.connection import ConnectionStats
from vllm_bootstrap.upstream.pool import UpstreamPool, fetch_fresh
from vllm_bootstrap.upstream.response import UpstreamError, UpstreamResponse

__all__ = [
    "ConnectionStats",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamResponse",
    "fetch_fresh",
    "probe_host",
]
