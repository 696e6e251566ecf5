"""The options many commands share: where the server is and the key (accepted before the
command and after it), `--json` and `-q`.

`--url` and `--key` are declared on the root and on every client command, so
`vllm-bootstrap --url U ps` and `vllm-bootstrap ps --url U` both work. Each declaration
offers its value to one `Connection` kept in the context's `meta` (shared by the whole
command line); one typed on the command line wins over one read from the environment,
the later (the command's) over the earlier (the root's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click
from click.core import ParameterSource

F = TypeVar("F", bound=Callable[..., Any])
URL_ENV = "VLLM_BOOTSTRAP_URL"
KEY_ENV = "VLLM_ACCESS_KEY"
_META = "vllm_bootstrap.connection"


@dataclass
class Connection:
    """The server and key a client command talks with (None: the client's default)."""

    url: str | None = None
    key: str | None = None
    _typed: set[str] = field(default_factory=set)  # given on the command line

    def offer(self, name: str, value: str, typed: bool) -> None:
        if typed or name not in self._typed:
            setattr(self, name, value)
        if typed:
            self._typed.add(name)

    @property
    def typed(self) -> bool:
        """Whether --url or --key was given on the command line (not from the environment)."""
        return bool(self._typed)

    @staticmethod
    def of(ctx: click.Context) -> Connection:
        connection: Connection = ctx.meta.setdefault(_META, Connection())
        return connection


@dataclass(frozen=True)
class Invocation:
    """What main() took off the command line before Click read it: the words after `--`,
    vLLM's arguments (for `launch` alone)."""

    vllm_args: tuple[str, ...] = ()

    @staticmethod
    def of(ctx: click.Context) -> Invocation:
        return ctx.find_object(Invocation) or Invocation()


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None and param.name is not None:
        typed = ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
        Connection.of(ctx).offer(param.name, value, typed)


url_option = click.option(
    "--url",
    envvar=URL_ENV,
    show_envvar=True,
    metavar="URL",
    expose_value=False,
    callback=_remember,
    help="The server (default http://127.0.0.1:8000).",
)
key_option = click.option(
    "--key",
    envvar=KEY_ENV,
    show_envvar=True,
    metavar="KEY",
    expose_value=False,
    callback=_remember,
    help="The access key, or a scoped key, sent as a bearer token.",
)


def talks_to_server(command: F) -> F:
    """`--url` and `--key` on a command (or a group of them), after its own options."""
    return url_option(key_option(command))


def json_option(command: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the server's answer, as JSON."
    )(command)


def quiet_option(command: F) -> F:
    return click.option(
        "-q", "--quiet", is_flag=True, help="Only the ids, one a line (for xargs)."
    )(command)
