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
    _batch_commands(commands)
    return parser


def _command(commands: Any, name: str, handler: Handler, help: str, read: bool = False) -> Any:
    parser = commands.add_parser(name, help=help, description=help)
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
    models = commands.add_parser("models", help="model profiles").add_subparsers(
        dest="models_command", required=True, metavar="ACTION"
    )
    _command(models, "list", handlers.models_list, "every profile and its state", read=True)
    put = _command(models, "put", handlers.models_put, "store the profiles of a YAML or JSON file")
    put.add_argument("file")
    for name, handler in (("load", handlers.models_load), ("unload", handlers.models_unload)):
        action = _command(models, name, handler, f"{name} a profile")
        action.add_argument("name")
        action.add_argument("--wait", action="store_true", help="answer once it is done")


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
