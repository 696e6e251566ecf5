"""Stand-in for vLLM's EngineCore process: a grandchild of the control plane.

Like the real one it lives in the API server's process group; unlike the real one it does
not notice its parent dying, so only a stop that signals the whole group ends it.
"""

import os
import signal
import sys
import time

if __name__ == "__main__":
    if os.environ.get("STANDIN_IGNORE_SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"(EngineCore_DP0 pid={os.getpid()}) engine core running", flush=True)
    while True:
        time.sleep(3600)
    sys.exit(0)
