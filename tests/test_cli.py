"""The command line against the real server and the stand-in vLLM, with the access key set
(VLLM_BOOTSTRAP_URL and VLLM_ACCESS_KEY from the environment): progress through the phases,
tables and --json, models, batches with progress, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.harness import Server

KEY = "cli-key"


@pytest.fixture
def keyed(start_server: ServerFactory) -> Server:
    return start_server(VLLM_ACCESS_KEY=KEY, FAKE_VLLM_LOAD_SECONDS="1.3")


def cli(
    server: Server, *args: str, key: str = KEY, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The real `vllm-bootstrap` entry point, as a user runs it against `server`."""
    env = {**os.environ, "VLLM_BOOTSTRAP_URL": server.url, "VLLM_ACCESS_KEY": key}
    result = subprocess.run(
        [sys.executable, "-m", "vllm_bootstrap", *args],
        env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_launch_waits_with_progress_then_ps_status_logs_and_stop(keyed: Server) -> None:
    started = cli(
        keyed, "launch", "org/model", "--gpus", "0", "--wait", "--arg=--seed=1", "--", "-q", "2"
    )
    launch_id = started.stdout.split()[0]
    assert started.stdout.strip().endswith("ready on port " + str(keyed.status(launch_id)["port"]))
    progress = started.stderr.splitlines()
    assert any("loading_weights" in line and "%" in line for line in progress)
    assert "ready" in progress[-1]
    table = cli(keyed, "ps").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "STATE", "PHASE"]
    assert table[1].split()[:3] == [launch_id, "ready", "ready"]
    listed = json.loads(cli(keyed, "ps", "--json").stdout)
    assert listed[0]["extra_args"] == ["--seed=1", "-q", "2"]
    assert json.loads(cli(keyed, "status", launch_id, "--json").stdout)["state"] == "ready"
    assert cli(keyed, "stop", launch_id).stdout.strip() == f"{launch_id} stopped"
    followed = cli(keyed, "logs", launch_id, "-f").stdout  # returns: the launch has ended
    assert "Application startup complete." in followed


def test_stats_as_a_table_and_as_json(keyed: Server) -> None:
    text = cli(keyed, "stats").stdout
    assert "CPUs" in text
    assert "NVIDIA H100 80GB HBM3" in text
    assert len(json.loads(cli(keyed, "stats", "--json").stdout)["gpus"]) == 2


def test_models_put_list_load_and_unload(keyed: Server, tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - name: small\n    model: org/small\n    idle_ttl_seconds: 60\n")
    assert cli(keyed, "models", "put", str(models)).stdout.strip() == "small: stored"
    assert cli(keyed, "models", "load", "small", "--wait").stdout.strip() == "small: loaded"
    rows = cli(keyed, "models", "list").stdout.splitlines()
    assert rows[1].split()[:3] == ["small", "org/small", "loaded"]
    assert cli(keyed, "models", "unload", "small", "--wait").stdout.strip() == "small: not loaded"
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: x\n")
    refused = cli(keyed, "models", "put", str(bad), check=False)
    assert refused.returncode == 1
    assert "profile 1 ('x'): model: Field required" in refused.stderr


def test_batch_submit_waits_with_progress_then_list_and_download(
    keyed: Server, tmp_path: Path
) -> None:
    launch_id = cli(keyed, "launch", "org/model", "--gpus", "0", "--wait").stdout.split()[0]
    lines = [
        {
            "custom_id": f"r{index}",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "org/model", "prompt": f"p{index}", "max_tokens": 1},
        }
        for index in range(20)
    ]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(line) + "\n" for line in lines))
    submitted = cli(
        keyed, "batch", "submit", str(requests), "--endpoint", "/v1/completions", "--wait"
    )
    batch_id, status = submitted.stdout.split()
    assert status == "completed"
    assert "req/s" in submitted.stderr
    assert "20/20 (0 failed)" in submitted.stderr.splitlines()[-1]
    assert cli(keyed, "batch", "list").stdout.splitlines()[1].split()[:2] == [batch_id, "completed"]
    saved = cli(keyed, "batch", "download", batch_id, "--output", str(tmp_path)).stdout.split()
    assert [Path(path).name for path in saved] == [f"{batch_id}-output.jsonl"]
    assert len(Path(saved[0]).read_text().splitlines()) == 20
    cli(keyed, "stop", launch_id)


def test_errors_print_one_line_and_exit_non_zero(keyed: Server) -> None:
    unknown = cli(keyed, "status", "nope", check=False)
    assert unknown.returncode == 1
    assert unknown.stderr == "vllm-bootstrap: the server answered 404: no launch with id 'nope'\n"
    gone = cli(keyed, "--url", "http://127.0.0.1:9", "ps", check=False)
    assert gone.returncode == 1
    assert gone.stderr.startswith("vllm-bootstrap: cannot reach the server at http://127.0.0.1:9")
    bad_gpus = cli(keyed, "launch", "m", "--gpus", "zero", check=False)
    assert bad_gpus.stderr == "vllm-bootstrap: --gpus takes GPU indices like 0,1, got 'zero'\n"


def test_a_launch_that_fails_shows_its_log_tail(keyed: Server) -> None:
    failed = cli(keyed, "launch", "crash-on-start", "--gpus", "1", "--wait", check=False)
    assert failed.returncode == 1
    assert "did not become ready" in failed.stderr
    assert "stand-in crash during start-up" in failed.stderr


def test_serve_is_the_server(keyed: Server) -> None:
    assert cli(keyed, "serve", "--version").stdout.startswith("vllm-bootstrap serve ")


@pytest.mark.parametrize(
    ("argv", "runs"),
    [
        ([], "server"),
        (["--port", "1"], "server"),
        (["--host", "stats", "--port", "1"], "server"),  # a value, not a command
        (["serve", "--port", "1"], "server"),
        (["--url", "http://x", "ps"], "client"),
        (["--url", "serve", "ps"], "client"),
        (["--help"], "client"),
    ],
)
def test_the_first_word_decides_server_or_client(argv: list[str], runs: str) -> None:
    from vllm_bootstrap.cli import first_command

    position = first_command(argv)
    word = None if position is None else argv[position]
    assert ("server" if word in (None, "serve") else "client") == runs


def test_an_answer_that_is_not_the_apis_is_one_line(tmp_path: Path) -> None:
    """A --url that points at some other web server: a line, never a traceback."""
    import http.server
    import threading

    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>hello</html>" if self.path.startswith("/launch") else b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{other.server_address[1]}"
    try:
        for args in (["ps"], ["status", "x"], ["stats"], ["batch", "list"]):
            result = subprocess.run(
                [sys.executable, "-m", "vllm_bootstrap", "--url", url, *args],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert result.returncode == 1, (args, result.stderr)
            assert len(result.stderr.splitlines()) == 1, (args, result.stderr)
            assert "Traceback" not in result.stderr
    finally:
        other.shutdown()


def test_control_characters_from_the_server_never_reach_the_terminal(keyed: Server) -> None:
    hostile = "org/\x1b[2J\x1b]52;c;cGF3bmVk\x07model"  # clear the screen; write the clipboard
    launch = keyed.launch_ready(model=hostile, gpu_ids=[0])
    put = keyed.client.put("/models/evil%1B%5B2J", json={"model": hostile})
    assert put.status_code == 200, put.text
    for args in (
        ["ps"],
        ["status", launch["launch_id"]],
        ["models", "list"],
        ["logs", launch["launch_id"]],
        ["models", "load", "evil\x1b[2J"],
    ):
        shown = cli(keyed, *args).stdout
        assert "\x1b" not in shown, args
        assert "\x07" not in shown, args
        assert "\\x1b[2J" in shown, args  # escaped, still readable
    assert "\x1b[2J" in cli(keyed, "logs", launch["launch_id"], "--raw").stdout  # asked for
    as_json = json.loads(cli(keyed, "status", launch["launch_id"], "--json").stdout)
    assert as_json["model"] == hostile  # JSON's own escaping carries it intact
