"""The command line's root: without a command (or with `serve`) it starts the server;
with one it talks to a running server. Each command lives with its kind (launches.py,
profiles.py, cache.py, batches.py, keys.py, chat.py); options.py has those they share,
session.py how their errors read.

The server's own modules (uvicorn, the app) are imported by serve() alone, when it runs:
a client command loads nothing of the server.
"""

from __future__ import annotations

from typing import Any

import click

from vllm_bootstrap import __version__
from vllm_bootstrap.cli import batches, cache, chat, keys, launches, profiles
from vllm_bootstrap.cli.options import Connection, Invocation, talks_to_server

_HOST_HELP = "Address to listen on [env var: VLLM_BOOTSTRAP_HOST; default 127.0.0.1]."
_PORT_HELP = "Port to listen on [env var: VLLM_BOOTSTRAP_PORT; default 8000]."
# Where the root leaves its server options for `serve`.
_SERVER_OPTIONS = "vllm_bootstrap.server_options"


def server_options(command: Any) -> Any:
    """--host, --port and --log-level. Their environment variables are read by the server's
    settings (with its own checks and error), so Click leaves them alone."""
    command = click.option("--log-level", type=click.Choice(["debug", "info", "warning"]))(command)
    command = click.option("--port", type=int, help=_PORT_HELP)(command)
    return click.option("--host", help=_HOST_HELP)(command)


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@server_options
@click.version_option(__version__, message="%(prog)s %(version)s")
@talks_to_server
@click.pass_context
def root(ctx: click.Context, **server: Any) -> None:
    """Without a command (or with `serve`), start the server; with one, talk to a running
    server at --url with --key (given before the command or after it).

    \b
    Shell completion (bash; zsh and fish likewise):
      eval "$(_VLLM_BOOTSTRAP_COMPLETE=bash_source vllm-bootstrap)"
    """
    if Invocation.of(ctx).vllm_args and ctx.invoked_subcommand != "launch":
        raise click.UsageError("only `launch` takes arguments for vLLM after --")
    ctx.meta[_SERVER_OPTIONS] = server
    if ctx.invoked_subcommand in (None, "serve") and Connection.of(ctx).typed:
        # Likely meant to reach a server, not to start one.
        raise click.UsageError("--url and --key are for talking to a server: name a command")
    if ctx.invoked_subcommand is None:
        _serve(**server)
    elif ctx.invoked_subcommand != "serve" and any(value is not None for value in server.values()):
        raise click.UsageError("--host, --port and --log-level are the server's: use `serve`")


@root.command()
@server_options
@click.version_option(__version__, message="vllm-bootstrap serve %(version)s")
@click.pass_context
def serve(ctx: click.Context, **server: Any) -> None:
    """Start the server (the default)."""
    before = ctx.meta.get(_SERVER_OPTIONS, {})  # `vllm-bootstrap --port 9000 serve`
    _serve(**{name: before.get(name) if value is None else value for name, value in server.items()})


def _serve(host: str | None, port: int | None, log_level: str | None) -> None:
    from vllm_bootstrap.cli.serve import serve as start  # the server's modules: only here

    start(host, port, log_level or "info")


for command in (*launches.ALL, chat.chat, profiles.models, cache.cache, batches.batch):
    root.add_command(command)
root.add_command(keys.keys)
root.add_command(keys.usage)
