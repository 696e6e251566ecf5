"""The usage ledger: requests in flight, last use and request counters, fed by the
forwarder on every route. Others use: UsageLedger, LATENCY_BUCKETS."""

from vllm_bootstrap.usage.ledger import LATENCY_BUCKETS, UsageLedger

__all__ = ["LATENCY_BUCKETS", "UsageLedger"]
