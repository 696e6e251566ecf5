"""Why a launch is refused, in the domain's words; the API maps each kind to a status."""

from __future__ import annotations


class LaunchRefused(Exception):
    """A launch request that cannot be carried out; the message says what to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidLaunch(LaunchRefused):
    """The request names something that does not exist here (a GPU, a usable port)."""


class ResourceConflict(LaunchRefused):
    """A GPU or port the request needs belongs to a launch or a process already."""


class Unavailable(LaunchRefused):
    """The box cannot launch anything now: no vLLM, no GPUs found, no free port."""
