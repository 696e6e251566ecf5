"""The command line: which client sub-command takes which arguments."""

from __future__ import annotations

import argparse
from typing import Any

from vllm_bootstrap.cli import commands as handlers
from vllm_bootstrap.cli.commands import Handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vllm-bootstrap",
        description="Without a command (or with `serve`), start the server; with one, talk "
        "to a running server.",
    )
    parser.add_argument("--url", help="the server (env VLLM_BOOTSTRAP_URL; default :8000)")
    parser.add_argument("--key", help="the access key (env VLLM_ACCESS_KEY)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="start the server (the default)")
    _launch_commands(commands)
    _model_commands(commands)
    _cache_commands(commands)
    _batch_commands(commands)
    _key_commands(commands)
    return parser


def _command(
    commands: Any,
    name: str,
    handler: Handler,
    help: str,
    read: bool = False,
    aliases: tuple[str, ...] = (),
) -> Any:
    parser = commands.add_parser(name, help=help, description=help, aliases=list(aliases))
    parser.set_defaults(handler=handler)
    if read:
        parser.add_argument("--json", action="store_true", help="print the server's answer")
    return parser


def _launch_commands(commands: Any) -> None:
    started = _command(commands, "launch", handlers.launch, "start vLLM for MODEL", read=True)
    started.add_argument("model")
    started.add_argument("--gpus", help="GPU indices, e.g. 0,1 (default: all free)")
    started.add_argument(
        "--arg",
        action="append",
        help="one argument for vLLM, as --arg=--max-model-len=8192 (repeatable); or put "
        "vLLM's arguments after --",
    )
    started.add_argument("--env", action="append", default=[], help="NAME=VALUE (repeatable)")
    started.add_argument("--wait", action="store_true", help="show progress until ready")
    listed = _command(commands, "ps", handlers.ps, "list launches", read=True)
    listed.add_argument("--all", action="store_true", help="stopped and failed ones too")
    _command(commands, "status", handlers.status, "one launch", read=True).add_argument("launch_id")
    logged = _command(commands, "logs", handlers.logs, "a launch's log")
    logged.add_argument("launch_id")
    logged.add_argument("-f", "--follow", action="store_true", help="until the launch ends")
    logged.add_argument(
        "--raw", action="store_true", help="control characters as they are (else escaped)"
    )
    stopped = _command(commands, "stop", handlers.stop, "stop a launch")
    stopped.add_argument("launch_id")
    stopped.add_argument("--no-wait", action="store_true", help="answer before it has ended")
    _command(commands, "stats", handlers.stats, "host and GPU figures", read=True)


def _model_commands(commands: Any) -> None:
    models = commands.add_parser("models", help="model profiles; pull a model").add_subparsers(
        dest="models_command", required=True, metavar="ACTION"
    )
    _command(models, "list", handlers.models_list, "every profile and its state", read=True)
    put = _command(models, "put", handlers.models_put, "store the profiles of a YAML or JSON file")
    put.add_argument("file")
    for name, handler in (("load", handlers.models_load), ("unload", handlers.models_unload)):
        action = _command(models, name, handler, f"{name} a profile")
        action.add_argument("name")
        action.add_argument("--wait", action="store_true", help="answer once it is done")
    pulled = _command(
        models, "pull", handlers.models_pull, "download a Hub model into the cache", read=True
    )
    pulled.add_argument("repo", help="a Hub repository id, org/name")
    pulled.add_argument("--revision", default="main", help="a branch, tag or commit (main)")
    pulled.add_argument("--wait", action="store_true", help="show progress until it ends")


def _cache_commands(commands: Any) -> None:
    cache = commands.add_parser("cache", help="the server's Hugging Face cache").add_subparsers(
        dest="cache_command", required=True, metavar="ACTION"
    )
    listed = "cached models, their sizes and who uses them"
    _command(cache, "ls", handlers.cache_list, listed, read=True, aliases=("list",))
    removed = "delete a model's files (refused while a launch or a download uses them)"
    _command(cache, "rm", handlers.cache_remove, removed).add_argument("repo")


def _batch_commands(commands: Any) -> None:
    batches = commands.add_parser("batch", help="batch jobs").add_subparsers(
        dest="batch_command", required=True, metavar="ACTION"
    )
    submit = _command(
        batches, "submit", handlers.batch_submit, "upload a JSONL file, run it", read=True
    )
    submit.add_argument("file")
    submit.add_argument("--endpoint", default="/v1/chat/completions")
    submit.add_argument("--completion-window", default="24h")
    submit.add_argument("--wait", action="store_true", help="show progress until it ends")
    listed = _command(batches, "list", handlers.batch_list, "recent batches", read=True)
    listed.add_argument("--limit", type=int, default=20)
    _command(batches, "status", handlers.batch_status, "one batch", read=True).add_argument(
        "batch_id"
    )
    _command(batches, "cancel", handlers.batch_cancel, "cancel a batch").add_argument("batch_id")
    download = _command(batches, "download", handlers.batch_download, "save its result files")
    download.add_argument("batch_id")
    download.add_argument("--output", default=".", help="folder (default: here)")


def _key_commands(commands: Any) -> None:
    keys = commands.add_parser("keys", help="scoped API keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    created = _command(
        keys, "create", handlers.keys_create, "a new key; its secret is shown once", read=True
    )
    created.add_argument("name")
    created.add_argument(
        "--scope", action="append", help="inference (the default), batches or admin (repeatable)"
    )
    created.add_argument(
        "--model", action="append", help="a model it may use (repeatable; default: all)"
    )
    created.add_argument("--max-concurrency", type=int, help="its requests in flight at once")
    created.add_argument("--rpm", type=int, help="requests per minute")
    created.add_argument("--tpm", type=int, help="tokens per minute")
    created.add_argument("--priority", type=int, help="vLLM's request priority (default 0)")
    created.add_argument("--expires-at", help="Unix seconds or ISO 8601 (2030-01-01T00:00Z)")
    listed = "every key, its limits and requests in flight"
    _command(keys, "ls", handlers.keys_list, listed, read=True, aliases=("list",))
    revoked = "revoke a key at once (its usage stays)"
    _command(keys, "rm", handlers.keys_delete, revoked).add_argument("key_id")
    used = _command(
        commands, "usage", handlers.usage, "requests and tokens per key, model and day", read=True
    )
    used.add_argument("--key", dest="usage_key", metavar="KEY", help="one key's, by id or name")
    used.add_argument("--model", help="one model's")
    used.add_argument("--since", help="from this day on, YYYY-MM-DD (UTC)")
    used.add_argument("--until", help="up to this day, YYYY-MM-DD, included")
    used.add_argument(
        "--group-by", help="a comma-separated set of key, model, day (default: all; '': totals)"
    )
    used.add_argument("--me", action="store_true", help="the usage of the key this command sends")
