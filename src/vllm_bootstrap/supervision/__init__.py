"""Running launches: admission, the child process and its lifetime, recovery after restarts."""

from vllm_bootstrap.faces import lazy_face

# What other packages may use, and the module defining each.
_FACE = {
    "BOX_MARKER_ENV": "recovery",
    "GPU": "gpus",
    "GPUDiscoveryError": "gpus",
    "InvalidLaunch": "errors",
    "LaunchRefused": "errors",
    "NoNvidiaSmi": "gpus",
    "ResourceConflict": "errors",
    "Supervisor": "supervisor",
    "Unavailable": "errors",
    "check_vllm_available": "child",
    "end_group": "processes",
    "group_members": "processes",
    "process_group": "processes",
    "process_start_ticks": "processes",
    "launch_environment": "child",
    "launches_of_box": "recovery",
    "kill_remnants": "recovery",
    "spawn": "processes",
    "wait_for_exit": "processes",
    "vllm_start": "child",
    "query_gpu_stats": "gpus",
    "query_gpus": "gpus",
    "shared_memory_warning": "child",
    "signal_group": "processes",
    "wait_for_group_exit": "processes",
    "REMNANT_KILL_WAIT_SECONDS": "processes",
    "Box": "remote",
    "RemoteProcess": "remote",
}
__all__ = sorted(_FACE)
__getattr__ = lazy_face(__name__, _FACE)
