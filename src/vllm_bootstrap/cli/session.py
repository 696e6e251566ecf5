"""One client command's time with the server: the `Client` it talks through, and every
error turned into one line that says what to do, then exit 1 (Ctrl-C: 130)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import click
import httpx

from vllm_bootstrap.cli.options import KEY_ENV, URL_ENV, Connection
from vllm_bootstrap.cli.output import shown
from vllm_bootstrap.client import ApiError, Client, LaunchFailed
from vllm_bootstrap.models import ProfileFileError


class CommandError(Exception):
    """A mistake in what was asked, or an end the user must hear of: printed as one line."""


@contextlib.contextmanager
def session() -> Iterator[Client]:
    """The client for the server and key given (--url/--key, or their environment
    variables); what goes wrong inside ends the command with one line."""
    connection = Connection.of(click.get_current_context())
    url = connection.url or "http://127.0.0.1:8000"  # the client's default, until it says
    try:
        with Client(connection.url, connection.key) as client:
            url = client.url
            yield client
    except BrokenPipeError:
        # The reader left (`| head`): stop writing, quietly, and keep Python's exit flush
        # from failing again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        line = one_line(exc, url)
        if line is None:
            raise
        fail(line)


def one_line(exc: Exception, url: str) -> str | None:
    """What to print for an error (None: a bug, left to its traceback)."""
    if isinstance(exc, ApiError):
        return answered(exc.status, exc.detail)
    if isinstance(exc, LaunchFailed):
        return str(exc).rstrip()
    if isinstance(exc, httpx.HTTPError):
        return unreachable(url, exc)
    if isinstance(exc, CommandError | ProfileFileError | OSError):
        return str(exc)
    if isinstance(exc, UnicodeError):
        return "the key or URL holds characters an HTTP header cannot carry"
    if isinstance(exc, ValueError | KeyError | TypeError):  # a 200 answer of the wrong shape
        first_line = (str(exc) or repr(exc)).splitlines()[0]
        return f"unexpected answer from the server at {url}: {first_line}"
    return None


def answered(status: int, detail: str) -> str:
    line = f"the server answered {status}: {detail}"
    if status == 401:
        line += f" (pass --key or set {KEY_ENV})"
    return line


def unreachable(url: str, exc: Exception) -> str:
    why = str(exc) or type(exc).__name__  # some of httpx's timeouts have no message
    return f"cannot reach the server at {url}: {why} (is it running? pass --url or set {URL_ENV})"


def fail(message: str) -> None:
    """Print `message` as the command's one line and exit 1."""
    print(f"vllm-bootstrap: {shown(message)}", file=sys.stderr)  # it may quote the server
    raise SystemExit(1)
