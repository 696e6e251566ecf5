"""The data plane: /proxy/{id} and /v1, forwarding requests to ready launches."""

from vllm_bootstrap.faces import lazy_face

# What other packages may use, and the module defining each.
_FACE = {
    "BodiesOverLimit": "errors",
    "DataPlane": "dispatch",
    "Forwarder": "forward",
    "HeldBodies": "held_bodies",
    "KeyedBodyUnreadable": "errors",
    "LaunchAsleep": "errors",
    "LaunchNotReady": "errors",
    "LaunchProxy": "proxy",
    "ModelRouter": "router",
    "NoModelInBody": "errors",
    "NoReadyReplica": "errors",
    "NoSuchLaunch": "errors",
    "OPENAI_PREFIX": "openai",
    "OpenAIRouter": "openai",
    "RoutedBodyTooLarge": "errors",
    "ServingDispatcher": "dispatch",
    "SwapperOnlyRoute": "errors",
    "UnknownModel": "errors",
    "UpstreamUnreachable": "errors",
    "PriorityTurns": "priority",
    "uses_priority_scheduling": "priority",
    "with_priority": "priority",
}
__all__ = sorted(_FACE)
__getattr__ = lazy_face(__name__, _FACE)
