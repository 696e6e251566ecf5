"""Heavy use: concurrent reads during launches and stops, and many launch/stop cycles."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx

from tests.conftest import ServerFactory
from tests.harness import Server, helper_pids, pid_alive


def open_fds(server: Server) -> int:
    assert server.process is not None
    return len(list(Path(f"/proc/{server.process.pid}/fd").iterdir()))


def resident_mib(server: Server) -> float:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def churn(server: Server, rounds: int, gpus: int, errors: list[str]) -> None:
    """Launch on every GPU, wait until ready, stop them all; `rounds` times."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(rounds):
            launched = []
            for gpu in range(gpus):
                response = client.post("/launch", json={"model": "m", "gpu_ids": [gpu]})
                if response.status_code != 201:
                    errors.append(response.text)
                    continue
                launched.append(response.json())
            for launch in launched:
                server.wait_for(launch["launch_id"], {"ready"})
            for launch in launched:
                stopped = client.post(f"/stop/{launch['launch_id']}", params={"wait": True})
                if stopped.json()["state"] != "stopped":
                    errors.append(stopped.text)


async def read_storm(url: str, paths: list[str]) -> list[int]:
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        responses = await asyncio.gather(*(client.get(path) for path in paths))
    return [response.status_code for response in responses]


def test_concurrent_reads_while_launches_come_and_go(start_server: ServerFactory) -> None:
    server = start_server(FAKE_GPU_COUNT="2", FAKE_VLLM_LOAD_SECONDS="0.2")
    errors: list[str] = []
    churner = threading.Thread(target=churn, args=(server, 4, 2, errors))
    churner.start()
    answered = 0
    while churner.is_alive():
        launches = server.client.get("/launch", params={"all": True}).json()
        ids = [launch["launch_id"] for launch in launches] or ["none"]
        paths = [
            ["/launch", f"/status/{ids[i % len(ids)]}", f"/logs/{ids[i % len(ids)]}"][i % 3]
            for i in range(200)
        ]
        codes = asyncio.run(read_storm(server.url, paths))
        assert set(codes) <= {200, 404}, codes
        answered += len(codes)
    churner.join()
    assert errors == []
    lag = server.client.get("/health").json()["event_loop_lag"]
    print(f"\n{answered} reads answered; event loop lag max {lag['max_ms']} ms")


def test_a_hundred_launch_stop_cycles_leave_nothing_behind(start_server: ServerFactory) -> None:
    server = start_server(FAKE_GPU_COUNT="4", FAKE_VLLM_LOAD_SECONDS="0.1")
    errors: list[str] = []
    churn(server, rounds=5, gpus=4, errors=errors)  # warm up: imports, pools, caches
    baseline_fds, baseline_mib = open_fds(server), resident_mib(server)
    churn(server, rounds=20, gpus=4, errors=errors)
    assert errors == []
    launches = server.client.get("/launch", params={"all": True}).json()
    assert len(launches) == 100
    assert {launch["state"] for launch in launches} == {"stopped"}
    for launch in launches:
        pids = [launch["pid"], *helper_pids(server.logs(launch["launch_id"]))]
        assert not any(pid_alive(pid) for pid in pids), launch["launch_id"]
    fds, mib = open_fds(server), resident_mib(server)
    print(f"\nfds {baseline_fds} -> {fds}; resident {baseline_mib:.1f} -> {mib:.1f} MiB")
    assert fds <= baseline_fds + 5
    assert mib <= baseline_mib + 20
