"""The facts admission decides on, gathered: a box's GPUs, who holds them, and who else uses
them.

On this box they come from nvidia-smi (its GPUs, and the processes holding memory on them,
with what /proc says of each). On another box of a cluster they are what that box last
reported; processes there that are not ours cannot be seen from here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from vllm_bootstrap.launches import Launch
from vllm_bootstrap.supervision import processes
from vllm_bootstrap.supervision.admission import GPUUser, Snapshot
from vllm_bootstrap.supervision.errors import Unavailable
from vllm_bootstrap.supervision.gpus import GPU, GPUDiscoveryError, NoNvidiaSmi, query_gpu_processes
from vllm_bootstrap.supervision.remote import Box


async def of_this_box(
    detect_gpus: Callable[[], Awaitable[list[GPU]]],
    gpu_owners: Callable[[], dict[int, str]],
    live: Callable[[], list[Launch]],
    launch_ports: range,
    check_gpu_users: bool,
) -> Snapshot:
    """This box: its GPUs (none, running on the CPU, without nvidia-smi), and (with
    `check_gpu_users`) the other processes on them. Who holds what (`gpu_owners`, the `live`
    launches) is read after those awaits, so the decision that follows sees it as it is."""
    cpu_only = False
    try:
        gpus = await detect_gpus()
    except NoNvidiaSmi:
        gpus, cpu_only = [], True
    except GPUDiscoveryError as exc:
        raise Unavailable(str(exc)) from None
    users = await gpu_users(gpus) if check_gpu_users and gpus else []
    launches = live()  # from here to the claim, no await
    return Snapshot(
        detected_gpus=[gpu.index for gpu in gpus],
        gpu_owners=gpu_owners(),
        port_owners={launch.port: launch.launch_id for launch in launches},
        our_process_groups=frozenset(
            launch.pgid for launch in launches if launch.pgid is not None and not launch.node_id
        ),
        gpu_users=users,
        launch_ports=launch_ports,
        cpu_only=cpu_only,
    )


def of_other_box(
    box: Box, gpu_owners: dict[int, str], live: list[Launch], launch_ports: range
) -> Snapshot:
    """Another box: its GPUs as last read there, and which launches hold them."""
    return Snapshot(
        detected_gpus=box.gpus,
        gpu_owners=gpu_owners,
        port_owners={launch.port: launch.launch_id for launch in live},
        launch_ports=launch_ports,
        cpu_only=box.cpu_only,
    )


async def gpu_users(gpus: list[GPU]) -> list[GPUUser]:
    """The processes holding memory on our GPUs, with their process group and name."""
    try:
        users = await query_gpu_processes()
    except GPUDiscoveryError as exc:
        raise Unavailable(
            f'{exc}; pass "force": true to launch without checking GPU users'
        ) from None
    index_of = {gpu.uuid: gpu.index for gpu in gpus}
    return [
        GPUUser(
            gpu_index=index_of[user.gpu_uuid],
            pid=user.pid,
            process_group=processes.process_group(user.pid),
            name=processes.process_name(user.pid),
            used_memory_mib=user.used_memory_mib,
        )
        for user in users
        if user.gpu_uuid in index_of
    ]
