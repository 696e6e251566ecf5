"""`batch`: submit a JSONL file and watch it, list, status, cancel, download results."""

from __future__ import annotations

from pathlib import Path

import click

from vllm_bootstrap.cli import output
from vllm_bootstrap.cli.options import json_option, quiet_option, talks_to_server
from vllm_bootstrap.cli.progress import BatchRate, Progress
from vllm_bootstrap.cli.session import CommandError, session
from vllm_bootstrap.client import Batch


@click.group()
@talks_to_server
def batch() -> None:
    """Batch jobs (OpenAI's /v1/batches)."""


@batch.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--endpoint", default="/v1/chat/completions", show_default=True)
@click.option("--completion-window", default="24h", show_default=True)
@click.option("--wait", is_flag=True, help="Show progress until it ends.")
@json_option
@talks_to_server
def submit(file: Path, endpoint: str, completion_window: str, wait: bool, as_json: bool) -> None:
    """Upload a JSONL file of requests and run it as a batch."""
    with session() as client:
        created = client.submit_batch(file, endpoint, completion_window)
        if not wait:
            output.emit(as_json, created, created.id)
            return
        progress, rate = Progress(), BatchRate()
        done = client.wait_for_batch(created.id, lambda seen: progress.show(rate.line(seen)))
        progress.done()
        output.emit(as_json, done, f"{done.id} {done.status}")
        if done.status != "completed":
            raise CommandError(f"batch {done.id} ended {done.status}{_errors(done)}")


@batch.command("list")
@click.option("--limit", default=20, show_default=True, help="The most recent this many.")
@quiet_option
@json_option
@talks_to_server
def list_batches(limit: int, quiet: bool, as_json: bool) -> None:
    """Recent batches."""
    with session() as client:
        batches = client.batches(limit)
        if quiet:
            output.ids(item.id for item in batches)
        else:
            output.emit(as_json, batches, batch_table(batches))


def batch_table(batches: list[Batch]) -> str:
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
    return output.table(rows, ("ID", "STATUS", "ENDPOINT", "DONE", "FAILED"))


@batch.command()
@click.argument("batch_id")
@json_option
@talks_to_server
def status(batch_id: str, as_json: bool) -> None:
    """One batch: its bar and pace (an ended one's real duration and rate), and why it
    failed, a line per error."""
    with session() as client:
        found = client.batch(batch_id)
        output.emit(as_json, found, BatchRate().line(found) + _errors(found))


@batch.command()
@click.argument("batch_id")
@talks_to_server
def cancel(batch_id: str) -> None:
    """Cancel a batch: requests in flight finish, the rest are not sent."""
    with session() as client:
        cancelled = client.cancel_batch(batch_id)
        print(output.shown(f"{cancelled.id} {cancelled.status}"))


@batch.command()
@click.argument("batch_id")
@click.option(
    "--output",
    "folder",
    default=".",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder (default: here).",
)
@talks_to_server
def download(batch_id: str, folder: Path) -> None:
    """Save a batch's output and error files as BATCH_ID-output.jsonl, -errors.jsonl."""
    with session() as client:
        found = client.batch(batch_id)
        folder.mkdir(parents=True, exist_ok=True)
        for file_id, name in (
            (found.output_file_id, "output.jsonl"),
            (found.error_file_id, "errors.jsonl"),
        ):
            if file_id:
                target = folder / f"{batch_id}-{name}"
                target.write_bytes(client.file_content(file_id))
                print(output.shown(str(target)))


def _errors(found: Batch) -> str:
    """Its validation errors, a line each ("line 2: invalid_method: ..."), indented."""
    return "".join(f"\n  {line}" for line in found.error_lines)
