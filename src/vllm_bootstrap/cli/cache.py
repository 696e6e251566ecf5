"""`cache`: the server's Hugging Face cache (ls, rm)."""

from __future__ import annotations

import click

from vllm_bootstrap.cli import output
from vllm_bootstrap.cli.options import json_option, quiet_option, talks_to_server
from vllm_bootstrap.cli.session import session
from vllm_bootstrap.client import Cache, CachedModel


@click.group()
@talks_to_server
def cache() -> None:
    """The server's Hugging Face cache."""


@cache.command("ls")
@quiet_option
@json_option
@talks_to_server
def list_cache(quiet: bool, as_json: bool) -> None:
    """Cached models, their sizes and who uses them."""
    with session() as client:
        found = client.cache()
        if quiet:
            output.ids(item.model for item in found.data)
        else:
            output.emit(as_json, found, cache_text(found))


def cache_text(found: Cache) -> str:
    """Where the cache is and its free space, then its models."""
    rows = [
        (
            item.model,
            output.size(item.size_on_disk),
            _revisions(item),
            _users(item),
            _minute(item.last_used),
        )
        for item in found.data
    ]
    header = ("MODEL", "SIZE", "REVISIONS", "USED BY", "LAST USED (UTC)")
    listing = output.table(rows, header) if rows else "no models cached"
    return f"{found.path}: {output.size(found.free_bytes)} free\n{listing}"


cache.add_command(list_cache, "list")


@cache.command("rm")
@click.argument("repo")
@talks_to_server
def remove(repo: str) -> None:
    """Delete a model's files (refused while a launch or a download uses them)."""
    with session() as client:
        removed = client.remove_from_cache(repo)
        print(output.shown(f"{removed.model} removed, {output.size(removed.freed_bytes)} freed"))


def _revisions(item: CachedModel) -> str:
    # A revision fetched by its commit has no branch or tag naming it: its commit, short.
    return ", ".join(",".join(rev.refs) or rev.commit[:12] for rev in item.revisions) or "-"


def _users(item: CachedModel) -> str:
    users = [f"launch {launch_id}" for launch_id in item.launches]
    users += [f"profile {name}" for name in item.profiles]
    users += ["a download"] if item.downloading else []
    return ", ".join(users) or "-"


def _minute(moment: str | None) -> str:
    """An ISO 8601 time from the server, to the minute: 2025-01-31 12:34."""
    return moment[:16].replace("T", " ") if moment else "-"
