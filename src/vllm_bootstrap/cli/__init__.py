"""`vllm-bootstrap`: the server (no sub-command, or `serve`), or a client of one.

vllm-bootstrap [--port 8000]          start the server (the README's command)
vllm-bootstrap serve [--port 8000]    the same
vllm-bootstrap launch MODEL --gpus 0  talk to a server at --url / VLLM_BOOTSTRAP_URL
"""

from __future__ import annotations

import sys

__all__ = ["main"]
# Options of the server and of the client that take a value: their values are not commands.
_VALUED_OPTIONS = frozenset({"--host", "--port", "--log-level", "--url", "--key"})


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    position = first_command(args)
    command = None if position is None else args[position]
    # Imported when needed: a client command should not pay for loading the server.
    if position is None or command == "serve":
        from vllm_bootstrap.cli.serve import serve

        serve(args if position is None else args[:position] + args[position + 1 :])
        return
    from vllm_bootstrap.cli.run import run

    raise SystemExit(run(args))


def first_command(args: list[str]) -> int | None:
    """Where the first word is that is neither an option nor an option's value ("-h" counts
    as the client's: its help lists every command, serve included); None: start the server."""
    skip = False
    for position, arg in enumerate(args):
        if skip:
            skip = False
        elif arg in ("-h", "--help"):
            return position
        elif arg in _VALUED_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return position
    return None
