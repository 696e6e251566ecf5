"""Stand-in for the `vllm` package, used by the tests in place of real vLLM.

It is started exactly as vLLM is (`python -m vllm.entrypoints.openai.api_server ...`) and
behaves like it where the control plane can tell: see `entrypoints/openai/api_server.py`.
"""

__version__ = "0.0.0+standin"
