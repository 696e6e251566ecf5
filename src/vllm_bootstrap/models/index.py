"""The launches of model profiles, by profile name, kept up to date from the launch
directory's change events, so finding a profile's launch is a dict lookup, not a scan."""

from __future__ import annotations

from vllm_bootstrap.launches import Launch, LaunchDirectory, LaunchState


class ProfileLaunches:
    def __init__(self, directory: LaunchDirectory) -> None:
        self._by_profile: dict[str, dict[str, Launch]] = {}
        directory.subscribe(self._changed)

    def live(self, name: str) -> Launch | None:
        """The launch of profile `name` that serves it or will (not one that is stopping)."""
        for launch in self._by_profile.get(name, {}).values():
            if launch.state is not LaunchState.STOPPING:
                return launch
        return None

    def asleep(self, name: str) -> Launch | None:
        for launch in self._by_profile.get(name, {}).values():
            if launch.state is LaunchState.SLEEPING:
                return launch
        return None

    def all(self) -> list[Launch]:
        """Every live launch of any profile."""
        return [launch for group in self._by_profile.values() for launch in group.values()]

    def _changed(self, launch: Launch) -> None:
        if launch.profile is None:
            return
        group = self._by_profile.setdefault(launch.profile, {})
        if launch.is_terminal:
            group.pop(launch.launch_id, None)
            if not group:
                del self._by_profile[launch.profile]
        else:
            group[launch.launch_id] = launch
