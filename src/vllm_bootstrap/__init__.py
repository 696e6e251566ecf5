"""vllm-bootstrap: turn a GPU box into a generic vLLM inference endpoint."""

from importlib.metadata import version

# The version lives in pyproject.toml alone (the release workflow checks the tag against it).
__version__ = version("vllm-bootstrap")
