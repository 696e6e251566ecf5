"""What each client sub-command does, through `Client` (parser.py says which command takes
which arguments; run.py turns errors into one line)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vllm_bootstrap.cli import output
from vllm_bootstrap.cli.progress import BatchRate, Progress, download_line, launch_line
from vllm_bootstrap.client import CachedModel, Client, Download
from vllm_bootstrap.models import load_profiles

Handler = Callable[[Client, argparse.Namespace], None]


class CommandError(Exception):
    """A mistake in what was asked: printed as one line."""


# --------------------------------------------------------------------- launches


def launch(client: Client, args: argparse.Namespace) -> None:
    env = dict(_pair(item) for item in args.env)
    extra_args = [*(args.arg or []), *args.vllm_args]
    options: dict[str, Any] = {"extra_args": extra_args or None, "env": env or None}
    started = client.launch(args.model, _gpus(args.gpus), **options)
    if not args.wait:
        _print(args, started.model_dump(), started.launch_id)
        return
    progress = Progress()
    ready = client.wait_until_ready(
        started.launch_id,
        on_update=lambda seen: progress.show(
            launch_line(seen.launch_id, seen.state, seen.phase, seen.progress)
        ),
    )
    progress.done()
    _print(args, ready.model_dump(), f"{ready.launch_id} ready on port {ready.port}")


def ps(client: Client, args: argparse.Namespace) -> None:
    launches = client.launches(all=args.all)
    rows = [
        (
            item.launch_id,
            item.state,
            item.phase or "",
            item.model,
            ",".join(map(str, item.gpu_ids)) or "cpu",
            item.port,
            item.in_flight,
        )
        for item in launches
    ]
    header = ("ID", "STATE", "PHASE", "MODEL", "GPUS", "PORT", "IN FLIGHT")
    _print(args, [item.model_dump() for item in launches], output.table(rows, header))


def status(client: Client, args: argparse.Namespace) -> None:
    found = client.status(args.launch_id)
    lines = [f"{name}: {value}" for name, value in found.model_dump().items()]
    _print(args, found.model_dump(), "\n".join(lines))


def logs(client: Client, args: argparse.Namespace) -> None:
    # Progress bars end their updates with \r: each shows as a line of its own.
    show = (
        (lambda text: text) if args.raw else (lambda text: output.shown(text.replace("\r", "\n")))
    )
    if args.follow:
        for text in client.follow_logs(args.launch_id):
            sys.stdout.write(show(text))
            sys.stdout.flush()
        return
    sys.stdout.write(show(client.logs(args.launch_id).content))


def stop(client: Client, args: argparse.Namespace) -> None:
    stopped = client.stop(args.launch_id, wait=not args.no_wait)
    print(output.shown(f"{stopped.launch_id} {stopped.state}"))


def stats(client: Client, args: argparse.Namespace) -> None:
    found = client.stats()
    host = found.host
    memory = host.memory
    lines = [
        f"load {' '.join(map(str, host.load_average))} on {host.cpu_count} CPUs, memory "
        f"{_bytes(memory.used_bytes)} of {_bytes(memory.total_bytes)} used"
    ]
    lines += [
        f"disk {name}: {_bytes(disk.free_bytes)} free of {_bytes(disk.total_bytes)}"
        for name, disk in host.disks.items()
    ]
    rows = [
        (
            gpu.index,
            gpu.name,
            f"{output.mib(gpu.memory_used_mib)} / {output.mib(gpu.memory_total_mib)}",
            "-" if gpu.utilization_percent is None else f"{gpu.utilization_percent:.0f}%",
            "-" if gpu.temperature_c is None else f"{gpu.temperature_c:.0f} C",
            "-" if gpu.power_watts is None else f"{gpu.power_watts:.0f} W",
            gpu.launch_id or "",
        )
        for gpu in found.gpus
    ]
    header = ("GPU", "NAME", "MEMORY", "UTIL", "TEMP", "POWER", "LAUNCH")
    gpus = output.table(rows, header) if rows else f"no GPUs: {found.error}"
    _print(args, found.model_dump(), "\n".join([*lines, gpus]))


# --------------------------------------------------------------------- model profiles


def models_list(client: Client, args: argparse.Namespace) -> None:
    profiles = client.profiles()
    rows = [
        (
            item.name,
            item.model,
            item.status.state if item.status else "",
            item.status.launch_id or "" if item.status else "",
            item.idle_ttl_seconds or "",
            "yes" if item.sleep else "",
            "yes" if item.pinned else "",
        )
        for item in profiles
    ]
    header = ("NAME", "MODEL", "STATE", "LAUNCH", "TTL S", "SLEEP", "PINNED")
    _print(args, [item.model_dump() for item in profiles], output.table(rows, header))


def models_put(client: Client, args: argparse.Namespace) -> None:
    for profile in load_profiles(Path(args.file)):
        fields = profile.to_document()
        name = fields.pop("name")
        client.put_profile(name, **fields)
        print(output.shown(f"{name}: stored"))


def models_load(client: Client, args: argparse.Namespace) -> None:
    loaded = client.load(args.name, wait=args.wait)
    print(output.shown(f"{args.name}: {loaded.status.state if loaded.status else 'asked'}"))


def models_unload(client: Client, args: argparse.Namespace) -> None:
    unloaded = client.unload(args.name, wait=args.wait)
    print(output.shown(f"{args.name}: {unloaded.status.state if unloaded.status else 'asked'}"))


def models_pull(client: Client, args: argparse.Namespace) -> None:
    started = client.download(args.repo, args.revision)
    if not args.wait:
        _print(args, started.model_dump(), _download_text(started))
        return
    progress = Progress()
    done = client.wait_for_download(
        started.id, on_update=lambda seen: progress.show(download_line(seen))
    )
    progress.done()
    _print(args, done.model_dump(), _download_text(done))
    if done.state != "completed":
        why = f": {done.error}" if done.error else ""
        raise CommandError(f"download {done.id} of {done.model} ended {done.state}{why}")


def _download_text(download: Download) -> str:
    total = f"{download.files_total} files, {output.size(download.bytes_total)}"
    if download.cached:
        total = "cached already"  # every file was there: the server fetched nothing
    return f"{download.id} {download.state} {download.model}@{download.revision} ({total})"


# --------------------------------------------------------------------- the model cache


def cache_list(client: Client, args: argparse.Namespace) -> None:
    found = client.cache()
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
    text = f"{found.path}: {output.size(found.free_bytes)} free\n{listing}"
    _print(args, found.model_dump(), text)


def cache_remove(client: Client, args: argparse.Namespace) -> None:
    removed = client.remove_from_cache(args.repo)
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


# --------------------------------------------------------------------- batches


def batch_submit(client: Client, args: argparse.Namespace) -> None:
    created = client.submit_batch(Path(args.file), args.endpoint, args.completion_window)
    if not args.wait:
        _print(args, created, created.id)
        return
    progress, rate = Progress(), BatchRate()
    done = client.wait_for_batch(created.id, lambda seen: progress.show(rate.line(seen)))
    progress.done()
    _print(args, done, f"{done.id} {done.status}")
    if done.status != "completed":
        why = "".join(f"\n  {line}" for line in done.error_lines)
        raise CommandError(f"batch {done.id} ended {done.status}{why}")


def batch_list(client: Client, args: argparse.Namespace) -> None:
    batches = client.batches(args.limit)
    rows = [
        (
            item.id,
            item.status,
            item.endpoint,
            f"{item.request_counts.completed}/{item.request_counts.total}",
            item.request_counts.failed,
        )
        for item in batches
    ]
    header = ("ID", "STATUS", "ENDPOINT", "DONE", "FAILED")
    _print(args, batches, output.table(rows, header))


def batch_status(client: Client, args: argparse.Namespace) -> None:
    found = client.batch(args.batch_id)
    _print(args, found, BatchRate().line(found))


def batch_cancel(client: Client, args: argparse.Namespace) -> None:
    cancelled = client.cancel_batch(args.batch_id)
    print(output.shown(f"{cancelled.id} {cancelled.status}"))


def batch_download(client: Client, args: argparse.Namespace) -> None:
    found = client.batch(args.batch_id)
    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    for file_id, name in (
        (found.output_file_id, "output.jsonl"),
        (found.error_file_id, "errors.jsonl"),
    ):
        if file_id:
            target = folder / f"{args.batch_id}-{name}"
            target.write_bytes(client.file_content(file_id))
            print(output.shown(str(target)))


# --------------------------------------------------------------------- scoped keys and usage

# The columns a usage row may be grouped by, and their headers.
_GROUP_COLUMNS = {"key": "KEY", "model": "MODEL", "day": "DAY"}


def keys_create(client: Client, args: argparse.Namespace) -> None:
    created = client.create_key(
        args.name,
        args.scope,
        models=args.model,
        max_concurrency=args.max_concurrency,
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        priority=args.priority,
        expires_at=_moment(args.expires_at),
    )
    text = (
        f"{created.id} {created.name} ({','.join(created.scopes)})\n{created.key}\n"
        "The secret above is not shown again (the server keeps only its hash): store it now."
    )
    _print(args, created.model_dump(), text)


def keys_list(client: Client, args: argparse.Namespace) -> None:
    keys = client.keys()
    rows = [
        (
            item.id,
            item.name,
            item.prefix,
            ",".join(item.scopes),
            "all" if item.models is None else ",".join(item.models),
            _limit(item.max_concurrency),
            _limit(item.requests_per_minute),
            _limit(item.tokens_per_minute),
            item.priority,
            "never" if item.expires_at is None else _utc(item.expires_at),
            item.in_flight,
        )
        for item in keys
    ]
    header = ("ID", "NAME", "PREFIX", "SCOPES", "MODELS", "CONCURRENCY", "RPM", "TPM")
    header += ("PRIORITY", "EXPIRES", "IN FLIGHT")
    _print(args, [item.model_dump() for item in keys], output.table(rows, header))


def keys_delete(client: Client, args: argparse.Namespace) -> None:
    client.delete_key(args.key_id)
    print(output.shown(f"{args.key_id} deleted"))


def usage(client: Client, args: argparse.Namespace) -> None:
    if args.me and args.usage_key is not None:
        raise CommandError("--me shows the usage of the key this command sends: drop --key")
    group_by = args.group_by
    if group_by is None:
        group_by = "model,day" if args.me else "key,model,day"
    asked = {"model": args.model, "since": args.since, "until": args.until, "group_by": group_by}
    rows = client.my_usage(**asked) if args.me else client.usage(args.usage_key, **asked)
    groups = [group for part in group_by.split(",") if (group := part.strip()) in _GROUP_COLUMNS]
    table = [
        (
            *(getattr(row, group) or "" for group in groups),
            row.requests,
            row.prompt_tokens,
            row.completion_tokens,
            row.total_tokens,
            row.errors,
            row.batch_lines,
            f"{row.load_gpu_seconds:.1f}",
        )
        for row in rows
    ]
    header = (*(_GROUP_COLUMNS[group] for group in groups), "REQUESTS", "PROMPT", "COMPLETION")
    header += ("TOTAL TOKENS", "ERRORS", "BATCH LINES", "LOAD GPU S")
    answer = [row.model_dump(exclude_unset=True) for row in rows]
    _print(args, answer, output.table(table, header))


# --------------------------------------------------------------------- parsing


def _print(args: argparse.Namespace, answer: Any, text: str) -> None:
    """`--json`: the answer as JSON (whose escaping covers control characters); else `text`,
    with what came from the server made safe for a terminal."""
    print(output.as_json(answer) if getattr(args, "json", False) else output.shown(text))


def _gpus(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"--gpus takes GPU indices like 0,1, got {text!r}") from None


def _pair(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals:
        raise CommandError(f"--env takes NAME=VALUE, got {text!r}")
    return name, value


def _bytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f} GiB"


def _moment(text: str | None) -> int | str | None:
    """--expires-at: Unix seconds as a number; anything else (ISO 8601) for the server to read."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def _utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
