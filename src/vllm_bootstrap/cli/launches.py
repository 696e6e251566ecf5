"""Launches: launch, ps, status, logs, stop; and stats (the host and its GPUs)."""

from __future__ import annotations

import sys

import click

from vllm_bootstrap.cli import output
from vllm_bootstrap.cli.options import Invocation, json_option, quiet_option, talks_to_server
from vllm_bootstrap.cli.progress import Progress, launch_line
from vllm_bootstrap.cli.session import CommandError, session
from vllm_bootstrap.client import ApiError, Client, Host, Launch, Node, Stats


@click.command()
@click.argument("model")
@click.option("--gpus", metavar="0,1", help="GPU indices (default: all free).")
@click.option(
    "--arg",
    "args",
    multiple=True,
    metavar="ARG",
    help="One argument for vLLM, as --arg=--max-model-len=8192 (repeatable); or put "
    "vLLM's arguments after --.",
)
@click.option("--env", multiple=True, metavar="NAME=VALUE", help="For vLLM (repeatable).")
@click.option("--node", metavar="ID|ADDRESS", help="On a cluster's head: the box to run on.")
@click.option(
    "--nodes",
    type=click.IntRange(min=2),
    help="On a cluster's head: run across this many boxes (each taken whole).",
)
@click.option("--gpus-per-node", type=click.IntRange(min=1), help="With --nodes: GPUs per box.")
@click.option("--wait", is_flag=True, help="Show progress until it is ready.")
@json_option
@talks_to_server
@click.pass_context
def launch(
    ctx: click.Context,
    model: str,
    gpus: str | None,
    args: tuple[str, ...],
    env: tuple[str, ...],
    node: str | None,
    nodes: int | None,
    gpus_per_node: int | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Start vLLM for MODEL.

    vLLM's own arguments go after --: launch MODEL --gpus 0 -- --max-model-len 8192"""
    extra_args = [*args, *Invocation.of(ctx).vllm_args]
    with session() as client:
        options = {
            "extra_args": extra_args or None,
            "env": dict(map(_pair, env)) or None,
            "node": node,
            "nodes": nodes,
            "gpus_per_node": gpus_per_node,
        }
        started = client.launch(model, _gpus(gpus), **options)
        if not wait:
            output.emit(as_json, started, started.launch_id)
            return
        progress = Progress()
        ready = client.wait_until_ready(
            started.launch_id, on_update=lambda seen: progress.show(launch_line(seen))
        )
        progress.done()
        output.emit(as_json, ready, f"{ready.launch_id} ready on port {ready.port}")


@click.command()
@click.option("-a", "--all", "everything", is_flag=True, help="Stopped and failed ones too.")
@quiet_option
@json_option
@talks_to_server
def ps(everything: bool, quiet: bool, as_json: bool) -> None:
    """List launches.

    SERVES is what clients put in "model": a profile's name, or vLLM's served names."""
    with session() as client:
        launches = client.launches(all=everything)
        if quiet:
            output.ids(item.launch_id for item in launches)
        else:
            output.emit(as_json, launches, launch_table(launches))


def launch_table(launches: list[Launch]) -> str:
    rows = [
        (
            item.launch_id,
            item.state,
            item.phase or "",
            serves(item),
            item.model,
            ",".join(map(str, item.gpu_ids)) or "cpu",
            item.port,
            item.in_flight,
        )
        for item in launches
    ]
    return output.table(
        rows, ("ID", "STATE", "PHASE", "SERVES", "MODEL", "GPUS", "PORT", "IN FLIGHT")
    )


def serves(launch: Launch) -> str:
    """The names clients send in "model": vLLM's served names once it is ready (a
    profile's launch serves the profile's name), before that the profile's."""
    return ",".join(launch.served_models) or launch.profile or "-"


@click.command()
@click.argument("launch_id")
@json_option
@talks_to_server
def status(launch_id: str, as_json: bool) -> None:
    """One launch, field by field."""
    with session() as client:
        found = client.status(launch_id)
        lines = [f"{name}: {value}" for name, value in found.model_dump().items()]
        output.emit(as_json, found, "\n".join(lines))


@click.command()
@click.argument("launch_id")
@click.option("-f", "--follow", is_flag=True, help="Until the launch ends.")
@click.option("--raw", is_flag=True, help="Control characters as they are (else escaped).")
@talks_to_server
def logs(launch_id: str, follow: bool, raw: bool) -> None:
    """A launch's log."""

    def show(text: str) -> str:
        # Progress bars end their updates with \r: each shows as a line of its own.
        return text if raw else output.shown(text.replace("\r", "\n"))

    with session() as client:
        if not follow:
            sys.stdout.write(show(client.logs(launch_id).content))
            return
        for text in client.follow_logs(launch_id):
            sys.stdout.write(show(text))
            sys.stdout.flush()


@click.command()
@click.argument("launch_id")
@click.option("--no-wait", is_flag=True, help="Answer before it has ended.")
@talks_to_server
def stop(launch_id: str, no_wait: bool) -> None:
    """Stop a launch."""
    with session() as client:
        stopped = client.stop(launch_id, wait=not no_wait)
        print(output.shown(f"{stopped.launch_id} {stopped.state}"))


@click.command()
@json_option
@talks_to_server
def stats(as_json: bool) -> None:
    """Host and GPU figures.

    Load, memory and disks; each GPU, its readings and its launch."""
    with session() as client:
        found = client.stats()
        cpu_box = not found.gpus and not as_json and _is_cpu_box(client)
        gpus = CPU_BOX if cpu_box else gpu_table(found)
        output.emit(as_json, found, "\n".join([*host_lines(found.host), gpus]))


@click.command()
@json_option
@quiet_option
@talks_to_server
def nodes(as_json: bool, quiet: bool) -> None:
    """The boxes of this endpoint.

    On a cluster's head every Ray node: its address, whether it is alive, its GPUs (and
    how many no launch owns), or why they could not be read; else this box."""
    with session() as client:
        found = client.nodes()
        if quiet:
            output.ids(node.node_id for node in found if node.node_id)  # a cluster's
            return
        output.emit(as_json, found, node_table(found))


def node_table(found: list[Node]) -> str:
    rows = [
        (
            node.node_id or "this box",
            node.address or "",
            "yes" if node.alive else "no",
            "head" if node.head else "worker",
            len(node.gpus),
            sum(1 for gpu in node.gpus if not gpu.launch_id),
            node.error or "",
        )
        for node in found
    ]
    return output.table(rows, ("NODE", "ADDRESS", "ALIVE", "ROLE", "GPUS", "FREE", "NOTE"))


# No nvidia-smi is an alarm on a GPU box; on a CPU box it is how things are.
CPU_BOX = "CPU box: launches run on vLLM's CPU build"


def _is_cpu_box(client: Client) -> bool:
    """GET /gpus answers [] where there is no nvidia-smi (503 where it fails)."""
    try:
        return client.gpus() == []
    except ApiError:
        return False


def host_lines(host: Host) -> list[str]:
    memory = host.memory
    lines = [
        f"load {' '.join(map(str, host.load_average))} on {host.cpu_count} CPUs, memory "
        f"{_gib(memory.used_bytes)} of {_gib(memory.total_bytes)} used"
    ]
    return lines + [
        f"disk {name}: {_gib(disk.free_bytes)} free of {_gib(disk.total_bytes)}"
        for name, disk in host.disks.items()
    ]


def gpu_table(found: Stats) -> str:
    rows = [
        (
            gpu.index,
            gpu.name,
            f"{output.mib(gpu.memory_used_mib)} / {output.mib(gpu.memory_total_mib)}",
            _figure(gpu.utilization_percent, "%"),
            _figure(gpu.temperature_c, " C"),
            _figure(gpu.power_watts, " W"),
            gpu.launch_id or "",
        )
        for gpu in found.gpus
    ]
    header = ("GPU", "NAME", "MEMORY", "UTIL", "TEMP", "POWER", "LAUNCH")
    return output.table(rows, header) if rows else f"no GPUs: {found.error}"


def _gpus(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"--gpus takes GPU indices like 0,1, got {text!r}") from None


def _pair(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals:
        raise CommandError(f"--env takes NAME=VALUE, got {text!r}")
    return name, value


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f} GiB"


def _figure(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.0f}{unit}"


ALL = (launch, ps, status, logs, stop, stats, nodes)
