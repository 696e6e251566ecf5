"""The control plane's HTTP face: routes, request schemas, access key, middleware, errors."""

from vllm_bootstrap.faces import lazy_face

# What other packages may use, and the module defining each.
_FACE = {
    "AccessKeyMiddleware": "auth",
    "AccessLog": "access_log",
    "AllowedHosts": "host_check",
    "BodySizeLimit": "body_limit",
    "CrossSiteGuard": "cross_site",
    "ErrorEdge": "errors",
    "HostGuard": "host_check",
    "LoopLagMonitor": "loop_lag",
    "Services": "services",
    "provide_services": "services:provide",
    "batch_api": "batch_routes",
    "download_router": "download_routes:router",
    "install_error_table": "errors:install",
    "key_router": "key_routes:router",
    "launch_router": "routes:router",
    "model_router": "model_routes:router",
    "monitoring_router": "monitoring_routes:router",
    "whole_schema": "openapi",
}
__all__ = sorted(_FACE)
__getattr__ = lazy_face(__name__, _FACE)
