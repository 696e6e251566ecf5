"""A Ray driver for the tests, run inside the head's box (`ip netns exec`): it starts a
launch's actor on a node, or finds one by name and acts on it, then prints JSON.

    python drive.py HEAD_ADDRESS start LAUNCH_ID NODE_ADDRESS ARGV_JSON
    python drive.py HEAD_ADDRESS log LAUNCH_ID
    python drive.py HEAD_ADDRESS stop LAUNCH_ID
"""

from __future__ import annotations

import json
import sys

import ray

from vllm_bootstrap.cluster import find_launch, start_launch_on


def main(head: str, action: str, launch_id: str, *rest: str) -> object:
    ray.init(address=head, namespace="vllm-bootstrap", logging_level="ERROR", log_to_driver=False)
    if action == "start":
        node_address, argv = rest[0], json.loads(rest[1])
        [node] = [node for node in ray.nodes() if node["NodeManagerAddress"] == node_address]
        actor = start_launch_on(node["NodeID"], launch_id, [0], {"FROM_THE_HEAD": "1"})
        return ray.get(actor.start.remote(argv))
    actor = find_launch(launch_id)
    if actor is None:
        return None
    if action == "log":
        text, size = ray.get(actor.read_log.remote(0))
        return {"text": text.decode(errors="replace"), "size": size}
    if action == "stop":
        code = ray.get(actor.stop.remote(3.0))
        ray.kill(actor)
        return {"return_code": code}
    raise SystemExit(f"unknown action {action!r}")


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
