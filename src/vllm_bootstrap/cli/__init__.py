"""`vllm-bootstrap`: the server (no command, or `serve`), or a client of one.

vllm-bootstrap [--port 8000]          start the server (the README's command)
vllm-bootstrap serve [--port 8000]    the same
vllm-bootstrap launch MODEL --gpus 0  talk to a server at --url / VLLM_BOOTSTRAP_URL

The commands are Click's (commands.py); main() only sets vLLM's arguments aside.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    from vllm_bootstrap.cli.commands import root
    from vllm_bootstrap.cli.options import Invocation

    args = sys.argv[1:] if argv is None else list(argv)
    # Everything after "--" is vLLM's, word for word: launch MODEL --gpus 0 -- --seed 1
    # (Click would read a "--help" there as ours).
    vllm_args = args[args.index("--") + 1 :] if "--" in args else []
    words = args[: len(args) - len(vllm_args) - ("--" in args)]
    root.main(words, prog_name="vllm-bootstrap", obj=Invocation(tuple(vllm_args)))
