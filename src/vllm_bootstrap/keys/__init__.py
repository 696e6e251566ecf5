"""Scoped API keys: their records, the scope each route needs, their limits, and the usage
they leave."""

from vllm_bootstrap.faces import lazy_face

# What other packages may use, and the module defining each.
_FACE = {
    "ADMIN": "record",
    "ANY_KEY": "scopes",
    "BATCHES": "record",
    "INFERENCE": "record",
    "KEY_IN_SCOPE": "record",
    "METER_IN_SCOPE": "record",
    "SCOPES": "record",
    "ApiKey": "record",
    "GROUPS": "usage",
    "KeyLimits": "limits",
    "KeyState": "limits",
    "KeyNotFound": "store",
    "KeyWriteFailed": "store",
    "KeyStore": "store",
    "KeyedTraffic": "traffic",
    "Meter": "metering",
    "NameTaken": "store",
    "RateLimited": "limits",
    "UsageBook": "usage",
    "key_of": "record",
    "required_scope": "scopes",
    "with_usage_asked": "metering",
    "as_flag": "metering",
    "usage_in": "metering",
    "with_admin_key": "admin_key",
    "is_loopback": "admin_key",
}
__all__ = sorted(_FACE)
__getattr__ = lazy_face(__name__, _FACE)
