"""The client sub-commands: talk to a server at --url (VLLM_BOOTSTRAP_URL) with --key
(VLLM_ACCESS_KEY). Every error prints one line and exits 1; `--json` on every read command
prints the server's answer for scripts."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from vllm_bootstrap.cli import output
from vllm_bootstrap.cli.progress import BatchRate, Progress, launch_line
from vllm_bootstrap.client import ApiError, Client, LaunchFailed
from vllm_bootstrap.models.file import ProfileFileError, load_profiles

Handler = Callable[[Client, argparse.Namespace], None]


class CommandError(Exception):
    """A mistake in what was asked: printed as one line."""


def run(argv: list[str]) -> int:
    # Everything after "--" is for vLLM: launch MODEL --gpus 0 -- --max-model-len 8192
    vllm_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = _parser().parse_args(argv[: len(argv) - len(vllm_args) - bool(vllm_args)])
    if vllm_args and args.command != "launch":
        return _fail("only `launch` takes arguments for vLLM after --")
    args.vllm_args = vllm_args
    try:
        with Client(args.url, args.key) as client:
            args.handler(client, args)
    except ApiError as exc:
        return _fail(f"the server answered {exc.status}: {exc.detail}")
    except LaunchFailed as exc:
        return _fail(f"{exc}".rstrip())
    except httpx.HTTPError as exc:
        return _fail(f"cannot reach the server at {args.url or 'VLLM_BOOTSTRAP_URL'}: {exc}")
    except BrokenPipeError:
        # The reader left (`| head`): stop writing, quietly, and keep Python's exit flush
        # from failing again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CommandError, ProfileFileError, OSError) as exc:
        return _fail(str(exc))
    except UnicodeError:
        return _fail("the key or URL holds characters an HTTP header cannot carry")
    except (ValueError, KeyError, TypeError) as exc:  # a 200 answer of the wrong shape
        where = args.url or "VLLM_BOOTSTRAP_URL"
        first_line = (str(exc) or repr(exc)).splitlines()[0]
        return _fail(f"unexpected answer from the server at {where}: {first_line}")
    except KeyboardInterrupt:
        return 130
    return 0


def _fail(message: str) -> int:
    print(f"vllm-bootstrap: {message}", file=sys.stderr)
    return 1


# --------------------------------------------------------------------- launches


def launch(client: Client, args: argparse.Namespace) -> None:
    env = dict(_pair(item) for item in args.env)
    extra_args = [*(args.arg or []), *args.vllm_args]
    options: dict[str, Any] = {"extra_args": extra_args or None, "env": env or None}
    started = client.launch(args.model, _gpus(args.gpus), **options)
    if not args.wait:
        _print(args, started.model_dump(), started.launch_id)
        return
    progress = Progress()
    ready = client.wait_until_ready(
        started.launch_id,
        on_update=lambda seen: progress.show(
            launch_line(seen.launch_id, seen.state, seen.phase, seen.progress)
        ),
    )
    progress.done()
    _print(args, ready.model_dump(), f"{ready.launch_id} ready on port {ready.port}")


def ps(client: Client, args: argparse.Namespace) -> None:
    launches = client.launches(all=args.all)
    rows = [
        (
            item.launch_id,
            item.state,
            item.phase or "",
            item.model,
            ",".join(map(str, item.gpu_ids)) or "cpu",
            item.port,
            item.in_flight,
        )
        for item in launches
    ]
    header = ("ID", "STATE", "PHASE", "MODEL", "GPUS", "PORT", "IN FLIGHT")
    _print(args, [item.model_dump() for item in launches], output.table(rows, header))


def status(client: Client, args: argparse.Namespace) -> None:
    found = client.status(args.launch_id)
    lines = [f"{name}: {value}" for name, value in found.model_dump().items()]
    _print(args, found.model_dump(), "\n".join(lines))


def logs(client: Client, args: argparse.Namespace) -> None:
    if args.follow:
        for text in client.follow_logs(args.launch_id):
            sys.stdout.write(text)
            sys.stdout.flush()
        return
    sys.stdout.write(client.logs(args.launch_id).content)


def stop(client: Client, args: argparse.Namespace) -> None:
    stopped = client.stop(args.launch_id, wait=not args.no_wait)
    print(f"{stopped.launch_id} {stopped.state}")


def stats(client: Client, args: argparse.Namespace) -> None:
    found = client.stats()
    host = found.host
    memory = host.get("memory", {})
    lines = [
        f"load {' '.join(map(str, host.get('load_average', [])))} on {host.get('cpu_count')} "
        f"CPUs, memory {_bytes(memory.get('used_bytes'))} of {_bytes(memory.get('total_bytes'))}"
        " used"
    ]
    lines += [
        f"disk {name}: {_bytes(disk.get('free_bytes'))} free of {_bytes(disk.get('total_bytes'))}"
        for name, disk in host.get("disks", {}).items()
    ]
    rows = [
        (
            gpu.index,
            gpu.name,
            f"{output.mib(gpu.memory_used_mib)} / {output.mib(gpu.memory_total_mib)}",
            "-" if gpu.utilization_percent is None else f"{gpu.utilization_percent:.0f}%",
            "-" if gpu.temperature_c is None else f"{gpu.temperature_c:.0f} C",
            "-" if gpu.power_watts is None else f"{gpu.power_watts:.0f} W",
            gpu.launch_id or "",
        )
        for gpu in found.gpus
    ]
    header = ("GPU", "NAME", "MEMORY", "UTIL", "TEMP", "POWER", "LAUNCH")
    gpus = output.table(rows, header) if rows else f"no GPUs: {found.error}"
    _print(args, found.model_dump(), "\n".join([*lines, gpus]))


# --------------------------------------------------------------------- model profiles


def models_list(client: Client, args: argparse.Namespace) -> None:
    profiles = client.profiles()
    rows = [
        (
            item.name,
            item.model,
            item.status.state if item.status else "",
            item.status.launch_id or "" if item.status else "",
            item.idle_ttl_seconds or "",
            "yes" if item.sleep else "",
            "yes" if item.pinned else "",
        )
        for item in profiles
    ]
    header = ("NAME", "MODEL", "STATE", "LAUNCH", "TTL S", "SLEEP", "PINNED")
    _print(args, [item.model_dump() for item in profiles], output.table(rows, header))


def models_put(client: Client, args: argparse.Namespace) -> None:
    for profile in load_profiles(Path(args.file)):
        fields = profile.to_document()
        name = fields.pop("name")
        client.put_profile(name, **fields)
        print(f"{name}: stored")


def models_load(client: Client, args: argparse.Namespace) -> None:
    loaded = client.load(args.name, wait=args.wait)
    print(f"{args.name}: {loaded.status.state if loaded.status else 'asked'}")


def models_unload(client: Client, args: argparse.Namespace) -> None:
    unloaded = client.unload(args.name, wait=args.wait)
    print(f"{args.name}: {unloaded.status.state if unloaded.status else 'asked'}")


# --------------------------------------------------------------------- batches


def batch_submit(client: Client, args: argparse.Namespace) -> None:
    created = client.submit_batch(Path(args.file), args.endpoint, args.completion_window)
    if not args.wait:
        _print(args, created, created["id"])
        return
    progress, rate = Progress(), BatchRate()
    done = client.wait_for_batch(created["id"], lambda seen: progress.show(rate.line(seen)))
    progress.done()
    _print(args, done, f"{done['id']} {done['status']}")
    if done["status"] != "completed":
        raise CommandError(f"batch {done['id']} ended {done['status']}: {done.get('errors')}")


def batch_list(client: Client, args: argparse.Namespace) -> None:
    batches = client.batches(args.limit)
    rows = [
        (
            item["id"],
            item["status"],
            item["endpoint"],
            f"{item['request_counts']['completed']}/{item['request_counts']['total']}",
            item["request_counts"]["failed"],
        )
        for item in batches
    ]
    header = ("ID", "STATUS", "ENDPOINT", "DONE", "FAILED")
    _print(args, batches, output.table(rows, header))


def batch_status(client: Client, args: argparse.Namespace) -> None:
    found = client.batch(args.batch_id)
    _print(args, found, BatchRate().line(found))


def batch_cancel(client: Client, args: argparse.Namespace) -> None:
    cancelled = client.cancel_batch(args.batch_id)
    print(f"{cancelled['id']} {cancelled['status']}")


def batch_download(client: Client, args: argparse.Namespace) -> None:
    found = client.batch(args.batch_id)
    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in (("output_file_id", "output.jsonl"), ("error_file_id", "errors.jsonl")):
        if found.get(key):
            target = folder / f"{args.batch_id}-{name}"
            target.write_bytes(client.file_content(found[key]))
            print(target)


# --------------------------------------------------------------------- parsing


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vllm-bootstrap",
        description="Without a command (or with `serve`), start the server; with one, talk "
        "to a running server.",
    )
    parser.add_argument("--url", help="the server (env VLLM_BOOTSTRAP_URL; default :8000)")
    parser.add_argument("--key", help="the access key (env VLLM_ACCESS_KEY)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="start the server (the default)")
    _launch_commands(commands)
    _model_commands(commands)
    _batch_commands(commands)
    return parser


def _command(commands: Any, name: str, handler: Handler, help: str, read: bool = False) -> Any:
    parser = commands.add_parser(name, help=help, description=help)
    parser.set_defaults(handler=handler)
    if read:
        parser.add_argument("--json", action="store_true", help="print the server's answer")
    return parser


def _launch_commands(commands: Any) -> None:
    started = _command(commands, "launch", launch, "start vLLM for MODEL", read=True)
    started.add_argument("model")
    started.add_argument("--gpus", help="GPU indices, e.g. 0,1 (default: all free)")
    started.add_argument(
        "--arg",
        action="append",
        help="one argument for vLLM, as --arg=--max-model-len=8192 (repeatable); or put "
        "vLLM's arguments after --",
    )
    started.add_argument("--env", action="append", default=[], help="NAME=VALUE (repeatable)")
    started.add_argument("--wait", action="store_true", help="show progress until ready")
    listed = _command(commands, "ps", ps, "list launches", read=True)
    listed.add_argument("--all", action="store_true", help="stopped and failed ones too")
    _command(commands, "status", status, "one launch", read=True).add_argument("launch_id")
    logged = _command(commands, "logs", logs, "a launch's log")
    logged.add_argument("launch_id")
    logged.add_argument("-f", "--follow", action="store_true", help="until the launch ends")
    stopped = _command(commands, "stop", stop, "stop a launch")
    stopped.add_argument("launch_id")
    stopped.add_argument("--no-wait", action="store_true", help="answer before it has ended")
    _command(commands, "stats", stats, "host and GPU figures", read=True)


def _model_commands(commands: Any) -> None:
    models = commands.add_parser("models", help="model profiles").add_subparsers(
        dest="models_command", required=True, metavar="ACTION"
    )
    _command(models, "list", models_list, "every profile and its state", read=True)
    put = _command(models, "put", models_put, "store the profiles of a YAML or JSON file")
    put.add_argument("file")
    for name, handler in (("load", models_load), ("unload", models_unload)):
        action = _command(models, name, handler, f"{name} a profile")
        action.add_argument("name")
        action.add_argument("--wait", action="store_true", help="answer once it is done")


def _batch_commands(commands: Any) -> None:
    batches = commands.add_parser("batch", help="batch jobs").add_subparsers(
        dest="batch_command", required=True, metavar="ACTION"
    )
    submit = _command(batches, "submit", batch_submit, "upload a JSONL file, run it", read=True)
    submit.add_argument("file")
    submit.add_argument("--endpoint", default="/v1/chat/completions")
    submit.add_argument("--completion-window", default="24h")
    submit.add_argument("--wait", action="store_true", help="show progress until it ends")
    listed = _command(batches, "list", batch_list, "recent batches", read=True)
    listed.add_argument("--limit", type=int, default=20)
    _command(batches, "status", batch_status, "one batch", read=True).add_argument("batch_id")
    _command(batches, "cancel", batch_cancel, "cancel a batch").add_argument("batch_id")
    download = _command(batches, "download", batch_download, "save its result files")
    download.add_argument("batch_id")
    download.add_argument("--output", default=".", help="folder (default: here)")


def _print(args: argparse.Namespace, answer: Any, text: str) -> None:
    print(output.as_json(answer) if getattr(args, "json", False) else text)


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


def _bytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f} GiB"
