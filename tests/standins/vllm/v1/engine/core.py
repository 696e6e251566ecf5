"""Stand-in for vLLM's EngineCore process, which runs the model through a Worker process.

Real vLLM 0.32 runs API server -> EngineCore -> Worker (plus helpers), all in one process
group. Like the real ones these stay in that group; unlike them they do not notice their
parent dying, so only a stop that signals the whole group ends them.
"""

import os
import signal
import subprocess
import sys
import time
from datetime import datetime


def log(role: str, message: str) -> None:
    stamp = datetime.now().strftime("%m-%d %H:%M:%S")
    print(f"({role} pid={os.getpid()}) INFO {stamp} [core.py:1] {message}", flush=True)


def main() -> None:
    if os.environ.get("STANDIN_IGNORE_SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "--worker" in sys.argv:
        log("Worker", "Starting to load model")
    else:
        worker = subprocess.Popen([sys.executable, "-m", "vllm.v1.engine.core", "--worker"])
        log("EngineCore", f"Initializing a V1 LLM engine (v0.0.0+standin); worker pid={worker.pid}")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
