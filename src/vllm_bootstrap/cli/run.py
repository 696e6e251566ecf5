"""The client sub-commands: talk to a server at --url (VLLM_BOOTSTRAP_URL) with --key
(VLLM_ACCESS_KEY). Every error prints one line and exits 1; `--json` on every read command
prints the server's answer for scripts."""

from __future__ import annotations

import os
import sys

import httpx

from vllm_bootstrap.cli.commands import CommandError
from vllm_bootstrap.cli.output import shown
from vllm_bootstrap.cli.parser import build_parser
from vllm_bootstrap.client import ApiError, Client, LaunchFailed
from vllm_bootstrap.models import ProfileFileError


def run(argv: list[str]) -> int:
    # Everything after "--" is for vLLM: launch MODEL --gpus 0 -- --max-model-len 8192
    vllm_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = build_parser().parse_args(argv[: len(argv) - len(vllm_args) - bool(vllm_args)])
    if vllm_args and args.command != "launch":
        return _fail("only `launch` takes arguments for vLLM after --")
    args.vllm_args = vllm_args
    try:
        with Client(args.url, args.key) as client:
            args.handler(client, args)
    except ApiError as exc:
        return _fail(f"the server answered {exc.status}: {exc.detail}")
    except LaunchFailed as exc:
        return _fail(f"{exc}".rstrip())
    except httpx.HTTPError as exc:
        return _fail(f"cannot reach the server at {args.url or 'VLLM_BOOTSTRAP_URL'}: {exc}")
    except BrokenPipeError:
        # The reader left (`| head`): stop writing, quietly, and keep Python's exit flush
        # from failing again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CommandError, ProfileFileError, OSError) as exc:
        return _fail(str(exc))
    except UnicodeError:
        return _fail("the key or URL holds characters an HTTP header cannot carry")
    except (ValueError, KeyError, TypeError) as exc:  # a 200 answer of the wrong shape
        where = args.url or "VLLM_BOOTSTRAP_URL"
        first_line = (str(exc) or repr(exc)).splitlines()[0]
        return _fail(f"unexpected answer from the server at {where}: {first_line}")
    except KeyboardInterrupt:
        return 130
    return 0


def _fail(message: str) -> int:
    print(f"vllm-bootstrap: {shown(message)}", file=sys.stderr)  # it may quote the server
    return 1
