"""The pages a browser opens: the web dashboard at `/` (one static page and its script, no
build step; dashboard.js reads the same API as everyone else), and the API's reference at
`/docs` and `/redoc` (api_docs.py), every file served from here."""

from vllm_bootstrap.faces import lazy_face

# What other packages may use, and the module defining each.
_FACE = {
    "api_docs_router": "api_docs:router",
    "dashboard_router": "routes:router",
}
__all__ = sorted(_FACE)
__getattr__ = lazy_face(__name__, _FACE)
