"""The web dashboard at `/`: one static page and its script, no build step (dashboard.js
reads the same API as everyone else)."""

from vllm_bootstrap.faces import lazy_face

# What other packages may use, and the module defining each.
_FACE = {
    "dashboard_router": "routes:router",
}
__all__ = sorted(_FACE)
__getattr__ = lazy_face(__name__, _FACE)
