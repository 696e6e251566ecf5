"""Model profiles: named recipes for launches that /v1 and batches load on demand."""

from vllm_bootstrap.faces import lazy_face

# What other packages may use, and the module defining each.
_FACE = {
    "IdleWatch": "idle",
    "LoadTimedOut": "errors",
    "ModelLoadFailed": "errors",
    "ModelProfile": "profile",
    "ModelSwapper": "swapper",
    "NoSuchProfile": "errors",
    "ProfileBusy": "errors",
    "ProfileFileError": "file",
    "ProfileStore": "store",
    "QueueFull": "errors",
    "load_profiles": "file",
    "declared_profiles": "file",
}
__all__ = sorted(_FACE)
__getattr__ = lazy_face(__name__, _FACE)
