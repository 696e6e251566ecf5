"""vllm-bootstrap: turn a GPU box into a generic vLLM inference endpoint."""

__version__ = "0.1.0"
