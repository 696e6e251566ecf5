"""Several boxes as one endpoint, on Ray.

A box is one of three things, by its settings:

- alone (the default): today's server; no Ray is started, nothing here is imported;
- the head (VLLM_BOOTSTRAP_RAY_HEAD=1): the server, plus a Ray head node that the control
  plane starts and stops (ray_node.py), and the cluster's inventory (inventory.py);
- a worker (VLLM_BOOTSTRAP_JOIN=HEAD_HOST:PORT): a Ray node that joins the head, and a
  health check (worker.py); no API of its own.

Ray's own token authentication guards the cluster: its token is derived from
VLLM_ACCESS_KEY (ray_env.py), so every box that has the key joins and no other can, and Ray's
processes never see the key itself.
"""

from vllm_bootstrap.faces import lazy_face

# What other packages may use, and the module defining each.
_FACE = {
    "Cluster": "inventory",
    "LaunchOnNode": "launch_actor",
    "find_launch": "launch_actor:find",
    "start_launch_on": "launch_actor:start_on",
    "NodeSpec": "ray_node",
    "pid_file_in": "ray_node",
    "worker_app": "worker",
}
__all__ = sorted(_FACE)
__getattr__ = lazy_face(__name__, _FACE)
