"""`keys`: scoped API keys (create, ls, rm); `usage`: requests and tokens per key, model
and day."""

from __future__ import annotations

import time

import click

from vllm_bootstrap.cli import output
from vllm_bootstrap.cli.options import json_option, quiet_option, talks_to_server
from vllm_bootstrap.cli.session import CommandError, session
from vllm_bootstrap.client import ApiKey, UsageRow

# The columns a usage row may be grouped by, and their headers.
_GROUP_COLUMNS = {"key": "KEY", "model": "MODEL", "day": "DAY"}


@click.group()
@talks_to_server
def keys() -> None:
    """Scoped API keys: which models, which routes, how much."""


@keys.command()
@click.argument("name")
@click.option(
    "--scope", multiple=True, help="inference (the default), batches or admin (repeatable)."
)
@click.option("--model", multiple=True, help="A model it may use (repeatable; default: all).")
@click.option("--max-concurrency", type=int, help="Its requests in flight at once.")
@click.option("--rpm", type=int, help="Requests per minute.")
@click.option("--tpm", type=int, help="Tokens per minute.")
@click.option("--priority", type=int, help="vLLM's request priority (default 0).")
@click.option("--expires-at", help="Unix seconds or ISO 8601 (2030-01-01T00:00Z).")
@json_option
@talks_to_server
def create(
    name: str,
    scope: tuple[str, ...],
    model: tuple[str, ...],
    max_concurrency: int | None,
    rpm: int | None,
    tpm: int | None,
    priority: int | None,
    expires_at: str | None,
    as_json: bool,
) -> None:
    """A new key; its secret is shown this once."""
    with session() as client:
        created = client.create_key(
            name,
            scope or None,
            models=model or None,
            max_concurrency=max_concurrency,
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
            priority=priority,
            expires_at=_moment(expires_at),
        )
        text = (
            f"{created.id} {created.name} ({','.join(created.scopes)})\n{created.key}\n"
            "The secret above is not shown again (the server keeps only its hash): store it now."
        )
        output.emit(as_json, created, text)


@keys.command("ls")
@quiet_option
@json_option
@talks_to_server
def list_keys(quiet: bool, as_json: bool) -> None:
    """Every key, its limits and requests in flight."""
    with session() as client:
        found = client.keys()
        if quiet:
            output.ids(item.id for item in found)
        else:
            output.emit(as_json, found, key_table(found))


def key_table(found: list[ApiKey]) -> str:
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
        for item in found
    ]
    header = ("ID", "NAME", "PREFIX", "SCOPES", "MODELS", "CONCURRENCY", "RPM", "TPM")
    return output.table(rows, (*header, "PRIORITY", "EXPIRES", "IN FLIGHT"))


keys.add_command(list_keys, "list")


@keys.command("rm")
@click.argument("key_id")
@talks_to_server
def remove(key_id: str) -> None:
    """Revoke a key at once (its usage stays)."""
    with session() as client:
        client.delete_key(key_id)
        print(output.shown(f"{key_id} deleted"))


@click.command()
@click.option("--of", "whose", metavar="KEY", help="One key's usage, by its id or name.")
@click.option("--model", help="One model's.")
@click.option("--since", metavar="YYYY-MM-DD", help="From this day on (UTC).")
@click.option("--until", metavar="YYYY-MM-DD", help="Up to this day, included.")
@click.option(
    "--group-by",
    metavar="key,model,day",
    help="A comma-separated set of key, model, day (default: all; '': totals).",
)
@click.option("--me", is_flag=True, help="The usage of the key this command sends.")
@json_option
@talks_to_server
def usage(
    whose: str | None,
    model: str | None,
    since: str | None,
    until: str | None,
    group_by: str | None,
    me: bool,
    as_json: bool,
) -> None:
    """Requests and tokens per key, model and day."""
    with session() as client:
        if me and whose is not None:
            raise CommandError("--me shows the usage of the key this command sends: drop --of")
        if group_by is None:
            group_by = "model,day" if me else "key,model,day"
        asked = {"model": model, "since": since, "until": until, "group_by": group_by}
        rows = client.my_usage(**asked) if me else client.usage(whose, **asked)
        output.emit(as_json, rows, usage_table(rows, group_by))


def usage_table(rows: list[UsageRow], group_by: str) -> str:
    """A column per group asked for (known ones), then the figures."""
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
    return output.table(table, (*header, "TOTAL TOKENS", "ERRORS", "BATCH LINES", "LOAD GPU S"))


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
