"""Why the data plane answers a request itself instead of forwarding it: domain errors,
each with the message a client reads. `api/errors.py` gives each its status and code and
renders it (OpenAI's shape under /v1, the control plane's under /proxy)."""

from __future__ import annotations

# A model name echoed back in an error is cut here: a body may hold megabytes of it.
SHOWN_NAME_CHARACTERS = 200


def shown(name: str) -> str:
    if len(name) <= SHOWN_NAME_CHARACTERS:
        return name
    return f"{name[:SHOWN_NAME_CHARACTERS]}... ({len(name)} characters)"


class ServingError(Exception):
    """Raised before the response started; str(error) is the client's message."""


class RoutedBodyTooLarge(ServingError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"request body over {limit} bytes, the limit for requests routed by model "
            "(VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES); /proxy/{launch_id}/... has none"
        )


class BodiesOverLimit(ServingError):
    # What other clients hold is theirs to know: the message gives the limit only.
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the /v1 request bodies the server holds (waiting for a model to load, or for "
            f"vLLM's answer) would pass {limit} bytes with this one "
            "(VLLM_BOOTSTRAP_MAX_HELD_BODY_BYTES): retry shortly"
        )


class NoModelInBody(ServingError):
    def __init__(self) -> None:
        super().__init__(
            "no `model` found in the JSON body: /v1 routes requests by it; use "
            "/proxy/{launch_id}/v1/... for requests without one"
        )


class UnknownModel(ServingError, LookupError):
    def __init__(self, model: str, served: list[str]) -> None:
        self.model = model
        super().__init__(
            f"The model `{shown(model)}` does not exist. "
            f"Served models: {', '.join(served) or 'none'}"
        )


class NoReadyReplica(ServingError, LookupError):
    """The model is being loaded, but no launch of it is ready yet."""

    def __init__(self, model: str, why: str = "is still loading; retry in a little while") -> None:
        super().__init__(f"The model `{shown(model)}` {why}")


class NoSuchLaunch(ServingError, LookupError):
    def __init__(self, launch_id: str) -> None:
        super().__init__(f"no launch with id {launch_id!r}")


class LaunchAsleep(ServingError):
    def __init__(self, launch_id: str, profile: str | None, state: str) -> None:
        # Its GPUs may be another launch's now: a /wake_up sent past us would collide.
        how = "is asleep" if state == "sleeping" else "is falling asleep"
        super().__init__(
            f"launch {launch_id} {how} (vLLM's sleep mode): wake it with "
            f"POST /models/{profile}/load, or send a /v1 request for it"
        )


class LaunchNotReady(ServingError):
    def __init__(self, launch_id: str, state: str) -> None:
        super().__init__(f"launch {launch_id} is {state}, not ready: retry later")


class SwapperOnlyRoute(ServingError):
    def __init__(self, launch_id: str, profile: str) -> None:
        super().__init__(
            f"launch {launch_id} runs model profile {profile!r}, whose sleep mode "
            "the server drives: use POST /models/{name}/load or /unload"
        )


class KeyedBodyUnreadable(ServingError):
    def __init__(self, launch_id: str) -> None:
        super().__init__(
            f"a scoped key's request through /proxy/{launch_id} must be a JSON object naming "
            "its `model`: the key's model list (or the launch's priority scheduling) is "
            "applied to it"
        )


class UpstreamUnreachable(ServingError):
    """vLLM did not answer; the request was forwarded (and counted as such), not refused."""

    def __init__(self, launch_id: str, port: int, cause: object) -> None:
        super().__init__(
            f"launch {launch_id}: vLLM at port {port} did not answer "
            f"({cause}); it may have crashed or be restarting"
        )
