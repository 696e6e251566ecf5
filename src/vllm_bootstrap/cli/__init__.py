"""`vllm-bootstrap`: the server (no sub-command, or `serve`), or a client of one.

vllm-bootstrap [--port 8000]          start the server (the README's command)
vllm-bootstrap serve [--port 8000]    the same
vllm-bootstrap launch MODEL --gpus 0  talk to a server at --url / VLLM_BOOTSTRAP_URL
"""

from __future__ import annotations

import sys

CLIENT_COMMANDS = frozenset({"launch", "ps", "status", "logs", "stop", "stats", "models", "batch"})


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    client = args[:1] in (["-h"], ["--help"]) or (
        args[:1] != ["serve"] and not CLIENT_COMMANDS.isdisjoint(args)
    )
    # Imported when needed: a client command should not pay for loading the server.
    if client:
        from vllm_bootstrap.cli.commands import run

        raise SystemExit(run(args))
    from vllm_bootstrap.cli.serve import serve

    serve(args[1:] if args[:1] == ["serve"] else args)
