"""`models`: profiles (list, put, load, unload, rm) and `models pull` (a Hub download)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from vllm_bootstrap.cli import output
from vllm_bootstrap.cli.options import json_option, quiet_option, talks_to_server
from vllm_bootstrap.cli.progress import Progress, download_line, profile_line
from vllm_bootstrap.cli.session import CommandError, answered, session
from vllm_bootstrap.client import ApiError, Client, Download, Profile
from vllm_bootstrap.models import load_profiles

POLL_SECONDS = 0.5
# A profile in one of these is on its way: a load waits while it is.
_ON_ITS_WAY = ("loading", "queued")


@click.group()
@talks_to_server
def models() -> None:
    """Model profiles; pull a model into the cache.

    A profile is a named recipe for a launch, loaded on demand."""


@models.command("list")
@quiet_option
@json_option
@talks_to_server
def list_profiles(quiet: bool, as_json: bool) -> None:
    """Every profile and its state."""
    with session() as client:
        profiles = client.profiles()
        if quiet:
            output.ids(item.name for item in profiles)
        else:
            output.emit(as_json, profiles, profile_table(profiles))


def profile_table(profiles: list[Profile]) -> str:
    rows = [
        (
            item.name,
            item.model,
            _state(item),
            item.status.launch_id or "" if item.status else "",
            item.idle_ttl_seconds or "",
            "yes" if item.sleep else "",
            "yes" if item.pinned else "",
        )
        for item in profiles
    ]
    return output.table(rows, ("NAME", "MODEL", "STATE", "LAUNCH", "TTL S", "SLEEP", "PINNED"))


@models.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@talks_to_server
def put(file: Path) -> None:
    """Store the profiles of a YAML or JSON file (VLLM_BOOTSTRAP_MODELS_FILE's format)."""
    with session() as client:
        for profile in load_profiles(file):
            fields = profile.to_document()
            name = fields.pop("name")
            client.put_profile(name, **fields)
            print(output.shown(f"{name}: stored"))


@models.command()
@click.argument("name")
@click.option("--wait", is_flag=True, help="Show progress until it is loaded.")
@talks_to_server
def load(name: str, wait: bool) -> None:
    """Load a profile now, evicting others if it must."""
    with session() as client:
        loaded = client.load(name) if not wait else load_with_progress(client, name)
        print(output.shown(f"{name}: {_state(loaded) or 'asked'}"))


def load_with_progress(client: Client, name: str) -> Profile:
    """Ask for the load, then follow it with its launch's bar. Polled rather than one
    `wait=true` request: a load can outlast the client's timeout and a front proxy's."""
    client.load(name)
    progress = Progress()
    profile = _watched(client, name, progress)
    if _state(profile) == "sleeping":
        profile = client.load(name, wait=True)  # a load asked without waiting wakes no one
    state = _state(profile)
    if state != "loaded":
        why = profile.status.last_error if profile.status else None
        raise CommandError(f"{name} did not load: {why or f'it is {state}'}")
    progress.show(profile_line(name, state, None))
    progress.done()
    return profile


def _watched(client: Client, name: str, progress: Progress) -> Profile:
    """The profile once it is no longer on its way, its progress shown meanwhile."""
    while True:
        profile = client.profile(name)
        state = _state(profile)
        if state not in _ON_ITS_WAY:
            return profile
        launch_id = profile.status.launch_id if profile.status else None
        launch = client.status(launch_id) if launch_id else None
        progress.show(profile_line(name, state, launch))
        time.sleep(POLL_SECONDS)


@models.command()
@click.argument("name", required=False)
@click.option("--all", "everything", is_flag=True, help="Every profile that holds GPUs.")
@click.option("--wait", is_flag=True, help="Answer once it is done.")
@talks_to_server
def unload(name: str | None, everything: bool, wait: bool) -> None:
    """Free a profile's GPUs (to sleep with `sleep: true`, else stop its launch)."""
    if (name is None) == (not everything):
        raise click.UsageError("name one profile, or pass --all")
    with session() as client:
        if name is not None:
            unloaded = client.unload(name, wait=wait)
            print(output.shown(f"{name}: {_state(unloaded) or 'asked'}"))
            return
        names = _holding_gpus(client)
        refused = 0
        for each in names:  # one that cannot be unloaded now must not keep the rest loaded
            try:
                unloaded = client.unload(each, wait=wait)
            except ApiError as exc:
                refused += 1
                print(output.shown(f"{each}: {answered(exc.status, exc.detail)}"), file=sys.stderr)
                continue
            print(output.shown(f"{each}: {_state(unloaded) or 'asked'}"))
        if refused:
            raise CommandError(f"{refused} of {len(names)} profiles were not unloaded")


def _holding_gpus(client: Client) -> list[str]:
    # A sleeping profile is unloaded too: that stops it, and its soft hold on the GPUs.
    return [item.name for item in client.profiles() if _state(item) not in ("", "not loaded")]


@models.command()
@click.argument("name")
@talks_to_server
def rm(name: str) -> None:
    """Forget a profile (a launch of it runs on until stopped or evicted)."""
    with session() as client:
        client.delete_profile(name)
        print(output.shown(f"{name}: removed"))


@models.command()
@click.argument("repo")
@click.option("--revision", default="main", show_default=True, help="A branch, tag or commit.")
@click.option("--wait", is_flag=True, help="Show progress until it ends.")
@json_option
@talks_to_server
def pull(repo: str, revision: str, wait: bool, as_json: bool) -> None:
    """Download a Hub model (org/name) into the server's cache."""
    with session() as client:
        started = client.download(repo, revision)
        if not wait:
            output.emit(as_json, started, _download_text(started))
            return
        progress = Progress()
        done = client.wait_for_download(
            started.id, on_update=lambda seen: progress.show(download_line(seen))
        )
        progress.done()
        output.emit(as_json, done, _download_text(done))
        if done.state != "completed":
            why = f": {done.error}" if done.error else ""
            raise CommandError(f"download {done.id} of {done.model} ended {done.state}{why}")


def _download_text(download: Download) -> str:
    total = f"{download.files_total} files, {output.size(download.bytes_total)}"
    if download.cached:
        total = "cached already"  # every file was there: the server fetched nothing
    return f"{download.id} {download.state} {download.model}@{download.revision} ({total})"


def _state(profile: Profile) -> str:
    return profile.status.state if profile.status else ""
