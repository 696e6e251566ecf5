"""What a launch is: its record, states, storage, logs, and the registry others read."""

from vllm_bootstrap.faces import lazy_face

# What other packages may use, and the module defining each.
_FACE = {
    "DEFAULT_MAX_RESTARTS": "record",
    "DEFAULT_RESTART_BACKOFF_SECONDS": "record",
    "DEFAULT_RESTART_POLICY": "record",
    "Launch": "record",
    "LaunchDirectory": "registry",
    "LaunchNotFound": "registry",
    "LaunchRegistry": "registry",
    "LaunchSpec": "spec",
    "LOADING_STATES": "states",
    "LaunchState": "states",
    "LoadProgress": "progress",
    "MAX_CHUNK_BYTES": "logs",
    "ResourceTaken": "store",
    "RestartPolicy": "record",
    "StateStore": "store",
    "StateWriteFailed": "store",
    "check_env": "spec",
    "check_extra_args": "spec",
    "check_text": "spec",
    "flag_value": "spec",
    "reserved_flag": "spec",
    "with_priority_scheduling": "spec",
    "iso_time": "record",
    "known_cause": "logs",
    "last_error_line": "logs",
    "log_size": "logs",
    "read_chunk": "logs",
}
__all__ = sorted(_FACE)
__getattr__ = lazy_face(__name__, _FACE)
