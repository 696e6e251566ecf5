"""The stand-in nvidia-smi against what a real one printed (tests/standins/recorded/,
recorded on an H100 machine by tools/record_nvidia_smi.sh): same shapes, same parse."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from vllm_bootstrap.supervision.gpus import APP_QUERY_FIELDS, QUERY_FIELDS, parse_gpu_line

STANDINS = Path(__file__).parent / "standins"
RECORDED = json.loads((STANDINS / "recorded" / "nvidia-smi-h100.json").read_text())


def _standin(*args: str, apps: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"FAKE_GPU_COUNT": "1", "PATH": "/usr/bin:/bin"}
    if apps is not None:
        env["FAKE_NVIDIA_SMI_APPS"] = str(apps)
    return subprocess.run(
        [str(STANDINS / "bin" / "nvidia-smi"), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def _fields(text: str) -> list[list[str]]:
    return [[field.strip() for field in line.split(",")] for line in text.splitlines() if line]


def test_the_real_gpu_query_parses() -> None:
    gpu = parse_gpu_line(RECORDED["gpus-busy"]["stdout"].splitlines()[0])
    assert (gpu.index, gpu.name, gpu.memory_total_mib) == (0, "NVIDIA H100 80GB HBM3", 81559)
    assert gpu.memory_used_mib == 2575
    assert gpu.uuid.startswith("GPU-")


def test_the_standin_answers_the_gpu_query_in_the_real_shape() -> None:
    query = f"--query-gpu={','.join(QUERY_FIELDS)}"
    standin = _standin(query, "--format=csv,noheader,nounits")
    real, fake = _fields(RECORDED["gpus"]["stdout"]), _fields(standin.stdout)
    assert standin.returncode == RECORDED["gpus"]["rc"] == 0
    assert len(fake[0]) == len(real[0]) == len(QUERY_FIELDS)
    assert fake[0][2:4] == real[0][2:4]  # name and total memory of an H100
    assert parse_gpu_line(standin.stdout.splitlines()[0]).index == 0


def test_the_standin_lists_compute_apps_in_the_real_shape(tmp_path: Path) -> None:
    apps = tmp_path / "apps.json"
    apps.write_text(json.dumps([{"pid": 446, "gpu": 0, "used_memory": 2566}]))
    standin = _standin(
        f"--query-compute-apps={','.join(APP_QUERY_FIELDS)}",
        "--format=csv,noheader,nounits",
        apps=apps,
    )
    real = _fields(RECORDED["apps-busy"]["stdout"])
    fake = _fields(standin.stdout)
    assert [len(row) for row in fake] == [len(row) for row in real] == [3]
    assert (fake[0][0], fake[0][2]) == (real[0][0], real[0][2])


def test_no_compute_apps_is_empty_output_like_the_real_one() -> None:
    standin = _standin(
        f"--query-compute-apps={','.join(APP_QUERY_FIELDS)}", "--format=csv,noheader,nounits"
    )
    assert (standin.stdout, standin.returncode) == (
        RECORDED["apps-idle"]["stdout"],
        RECORDED["apps-idle"]["rc"],
    )


def test_an_unknown_field_fails_like_the_real_one() -> None:
    standin = _standin("--query-gpu=index,no.such.field", "--format=csv,noheader,nounits")
    bad = RECORDED["bad-field"]
    assert (standin.stdout, standin.stderr, standin.returncode) == (
        bad["stdout"],
        bad["stderr"],
        bad["rc"],
    )
