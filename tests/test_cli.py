"""The command line against the real server and the stand-in vLLM, with the access key set
(VLLM_BOOTSTRAP_URL and VLLM_ACCESS_KEY from the environment): progress through the phases,
tables and --json, models, batches with progress, chat, and one-line errors that say what
to do; the server or a client chosen by the command; options anywhere, with their
environment variables in the help; tables cut to a terminal's width."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.harness import Server
from vllm_bootstrap.cli import output

KEY = "cli-key"


@pytest.fixture
def keyed(start_server: ServerFactory) -> Server:
    return start_server(VLLM_ACCESS_KEY=KEY, FAKE_VLLM_LOAD_SECONDS="1.3")


def cli(
    server: Server | None,
    *args: str,
    key: str = KEY,
    check: bool = True,
    env: dict[str, str] | None = None,
    stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    """The real `vllm-bootstrap` entry point, as a user runs it against `server` (its URL
    and `key` in the environment; `env` on top), `stdin` typed in."""
    result = subprocess.run(
        [sys.executable, "-m", "vllm_bootstrap", *args],
        env=_environment(server, key, env), input=stdin, capture_output=True, text=True,
        timeout=90, check=False,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr
    return result


def _environment(server: Server | None, key: str, extra: dict[str, str] | None) -> dict[str, str]:
    env = {**os.environ, "VLLM_ACCESS_KEY": key, **(extra or {})}
    if server is not None:
        env.setdefault("VLLM_BOOTSTRAP_URL", server.url)
    return env


class Terminal:
    """The CLI on a pseudo-terminal of its own, `columns` wide (COLUMNS, as a shell tells
    its programs): what it prints, as a person would see it, and keys typed into it."""

    def __init__(self, server: Server, *args: str, columns: int = 80) -> None:
        self._screen, secondary = pty.openpty()
        env = _environment(server, KEY, {"COLUMNS": str(columns)})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vllm_bootstrap", *args],
            env=env, stdin=secondary, stdout=secondary, stderr=secondary,
            preexec_fn=_controlled_by_its_terminal,
        )  # fmt: skip
        os.close(secondary)
        self.seen = ""

    def type(self, keys: str) -> None:
        os.write(self._screen, keys.encode())

    def read_until(self, text: str, timeout: float = 30) -> str:
        """What it printed from the last read until `text` appears (and `text`)."""
        start = len(self.seen)
        deadline = time.monotonic() + timeout
        while text not in self.seen[start:] and self._read(deadline - time.monotonic()):
            pass
        assert text in self.seen[start:], self.seen
        return self.seen[start:]

    def finish(self, timeout: float = 30) -> int:
        """Everything it prints until it exits; its exit code."""
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            pass
        os.close(self._screen)
        return self.process.wait(timeout)

    def _read(self, timeout: float) -> bool:
        if timeout <= 0 or not select.select([self._screen], [], [], timeout)[0]:
            return False
        try:
            chunk = os.read(self._screen, 65536)
        except OSError:  # EIO: the program has gone and closed the terminal
            return False
        self.seen += chunk.decode(errors="replace").replace("\r\n", "\n")
        return bool(chunk)


def _controlled_by_its_terminal() -> None:
    """In the child: a session of its own whose controlling terminal is its stdin, so
    Ctrl-C typed there is SIGINT to it, as in a shell."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_launch_waits_with_progress_then_ps_status_logs_and_stop(keyed: Server) -> None:
    started = cli(
        keyed, "launch", "org/model", "--gpus", "0", "--wait", "--arg=--seed=1", "--", "-q", "2"
    )
    launch_id = started.stdout.split()[0]
    assert started.stdout.strip().endswith("ready on port " + str(keyed.status(launch_id)["port"]))
    progress = started.stderr.splitlines()
    assert any("loading_weights" in line and "%" in line for line in progress)
    assert progress[-1] == f"{launch_id} {'ready':<13} [{'#' * 30}] ready"  # a full bar
    table = cli(keyed, "ps").stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "STATE", "PHASE", "SERVES"]
    assert table[1].split()[:5] == [launch_id, "ready", "ready", "org/model", "org/model"]
    listed = json.loads(cli(keyed, "ps", "--json").stdout)
    assert listed[0]["extra_args"] == ["--seed=1", "-q", "2"]
    assert json.loads(cli(keyed, "status", launch_id, "--json").stdout)["state"] == "ready"
    assert cli(keyed, "stop", launch_id).stdout.strip() == f"{launch_id} stopped"
    followed = cli(keyed, "logs", launch_id, "-f").stdout  # returns: the launch has ended
    assert "Application startup complete." in followed
    assert cli(keyed, "ps", "-q").stdout == ""  # ended: only with -a
    assert cli(keyed, "ps", "-a", "-q").stdout == f"{launch_id}\n"  # ids for xargs


def test_stats_as_a_table_and_as_json(keyed: Server) -> None:
    text = cli(keyed, "stats").stdout
    assert "CPUs" in text
    assert "NVIDIA H100 80GB HBM3" in text
    assert len(json.loads(cli(keyed, "stats", "--json").stdout)["gpus"]) == 2


def test_nodes_on_a_box_alone_is_this_box_with_its_gpus(keyed: Server) -> None:
    keyed.launch_ready(model="org/model", gpu_ids=[1])
    table = cli(keyed, "nodes").stdout.splitlines()
    assert table[0].split() == ["NODE", "ADDRESS", "ALIVE", "ROLE", "GPUS", "FREE", "NOTE"]
    assert table[1].split() == ["this", "box", "yes", "head", "2", "1"]
    assert cli(keyed, "nodes", "-q").stdout == ""  # no node ids: not a cluster
    [alone] = json.loads(cli(keyed, "nodes", "--json").stdout)
    assert alone["node_id"] is None


def test_stats_on_a_box_without_gpus_says_so_calmly(start_server: ServerFactory) -> None:
    cpu_box = start_server(PATH=os.environ["PATH"])  # no stand-in nvidia-smi: a CPU box
    text = cli(cpu_box, "stats").stdout
    assert text.splitlines()[-1] == "CPU box: launches run on vLLM's CPU build"
    assert "nvidia-smi" not in text


def test_url_or_key_without_a_command_is_a_usage_error_not_a_new_server() -> None:
    refused = cli(None, "--url", "http://gpu-box:8000", check=False)
    assert refused.returncode == 2
    assert "--url and --key are for talking to a server: name a command" in refused.stderr


def test_a_reader_that_leaves_ends_the_command_quietly(keyed: Server) -> None:
    keyed.launch_ready(model="org/model", gpu_ids=[0])
    env = _environment(keyed, KEY, None)
    command = [sys.executable, "-m", "vllm_bootstrap", "ps"]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as ps:
        assert ps.stdout is not None
        assert ps.stderr is not None
        ps.stdout.close()  # as `| head` does once it has read enough
        assert (ps.wait(timeout=60), ps.stderr.read()) == (0, b"")


def test_ctrl_c_ends_a_command_with_130(keyed: Server) -> None:
    launch_id = keyed.launch_ready(model="org/model", gpu_ids=[0])["launch_id"]
    terminal = Terminal(keyed, "logs", launch_id, "-f")
    terminal.read_until("Application startup complete.")
    terminal.type("\x03")
    assert terminal.finish() == 130
    assert "Traceback" not in terminal.seen


def test_models_put_list_load_and_unload(keyed: Server, tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - name: small\n    model: org/small\n    idle_ttl_seconds: 60\n")
    assert cli(keyed, "models", "put", str(models)).stdout.strip() == "small: stored"
    loaded = cli(keyed, "models", "load", "small", "--wait")
    assert loaded.stdout == "small: loaded\n"
    progress = loaded.stderr.splitlines()  # a bar through the load, as launch --wait's
    assert any(line.startswith("small loading") and "loading_weights" in line for line in progress)
    assert progress[-1] == f"small {'loaded':<13} [{'#' * 30}] ready"
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


# A port the server's settings refuse: the server path ends at once with its error, exit 2.
NOT_A_PORT = {"VLLM_BOOTSTRAP_PORT": "nope"}


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--port", "70000"],
        ["--host", "stats", "--port", "70000"],  # a value, not a command
        ["serve", "--port", "70000"],
        ["--port", "70000", "serve"],
        ["--log-level", "debug"],
    ],
)
def test_without_a_command_or_with_serve_it_is_the_server(argv: list[str]) -> None:
    started = cli(None, *argv, env=NOT_A_PORT, check=False)
    assert (started.returncode, started.stdout) == (2, "")
    assert started.stderr.startswith("vllm-bootstrap: configuration error: VLLM_BOOTSTRAP_PORT")


def test_with_a_command_it_is_a_client_and_server_options_are_the_servers() -> None:
    client = cli(None, "--url", "serve", "ps", env=NOT_A_PORT, check=False)  # a value
    assert client.returncode == 1
    assert client.stderr.startswith("vllm-bootstrap: cannot reach the server at serve")
    mixed = cli(None, "--port", "9000", "ps", check=False)
    assert mixed.returncode == 2
    assert "--host, --port and --log-level are the server's: use `serve`" in mixed.stderr
    not_vllms = cli(None, "ps", "--", "--seed", "1", check=False)
    assert "only `launch` takes arguments for vLLM after --" in not_vllms.stderr
    assert cli(None, "--version").stdout.startswith("vllm-bootstrap 0.")  # the image's check


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


# --------------------------------------------------------------------- issue 23's friction


def test_options_work_before_and_after_the_command_and_help_names_their_variables(
    keyed: Server,
) -> None:
    wrong = {"VLLM_BOOTSTRAP_URL": "http://127.0.0.1:9"}  # typed options win over these
    after = cli(keyed, "ps", "--key", KEY, "--url", keyed.url, key="wrong", env=wrong)
    before = cli(keyed, "--url", keyed.url, "--key", KEY, "ps", key="wrong", env=wrong)
    assert after.stdout == before.stdout
    assert after.stdout.startswith("ID ")
    # The command's own wins over the root's; the root's over the environment.
    cli(keyed, "--url", "http://127.0.0.1:9", "models", "list", "--url", keyed.url)
    cli(keyed, "--key", KEY, "models", "list", "-q", key="wrong")
    for command in ([], ["ps"], ["models", "load"], ["chat"]):
        shown = " ".join(cli(None, *command, "--help").stdout.split())  # help wraps lines
        assert "[env var: VLLM_BOOTSTRAP_URL]" in shown, command
        assert "[env var: VLLM_ACCESS_KEY]" in shown, command


def test_shell_completion_comes_with_the_command_line_library() -> None:
    script = cli(None, env={"_VLLM_BOOTSTRAP_COMPLETE": "bash_source"}).stdout
    assert "complete -o nosort -F _vllm_bootstrap_completion vllm-bootstrap" in script
    asked = {"COMP_WORDS": "vllm-bootstrap mo", "COMP_CWORD": "1"}
    completed = cli(None, env={"_VLLM_BOOTSTRAP_COMPLETE": "bash_complete", **asked}).stdout
    assert completed.split() == ["plain,models"]


def test_ps_tells_apart_two_profiles_of_one_model_and_all_are_unloaded_at_once(
    keyed: Server, tmp_path: Path
) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - {name: a, model: org/same}\n  - {name: b, model: org/same}\n")
    cli(keyed, "models", "put", str(models))
    cli(keyed, "models", "load", "a", "--wait")
    cli(keyed, "models", "load", "b", "--wait")
    rows = [row.split() for row in cli(keyed, "ps").stdout.splitlines()[1:]]
    assert sorted((row[3], row[4]) for row in rows) == [("a", "org/same"), ("b", "org/same")]

    assert cli(keyed, "models", "unload", "--all", "--wait").stdout.splitlines() == [
        "a: not loaded",
        "b: not loaded",
    ]
    assert cli(keyed, "ps", "-q").stdout == ""
    assert cli(keyed, "models", "rm", "a").stdout == "a: removed\n"
    assert cli(keyed, "models", "list", "-q").stdout == "b\n"
    neither = cli(keyed, "models", "unload", check=False)
    assert (neither.returncode, "name one profile, or pass --all" in neither.stderr) == (2, True)


def test_unload_all_goes_past_a_profile_it_cannot_unload_then_exits_1(
    keyed: Server, tmp_path: Path
) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(
        "models:\n"
        "  - {name: dozy, model: org/dozy, sleep: true, env: {FAKE_VLLM_SLEEP_SECONDS: '30'}}\n"
        "  - {name: other, model: org/other}\n"
    )
    cli(keyed, "models", "put", str(models))
    cli(keyed, "models", "load", "dozy", "--wait")
    cli(keyed, "models", "load", "other", "--wait")
    cli(keyed, "models", "unload", "dozy")  # falling asleep for 30 s: busy meanwhile
    unloaded = cli(keyed, "models", "unload", "--all", "--wait", check=False)
    assert unloaded.returncode == 1
    assert unloaded.stdout == "other: not loaded\n"
    assert "dozy: the server answered 409: launch " in unloaded.stderr
    assert "1 of 2 profiles were not unloaded" in unloaded.stderr


def test_a_model_that_fails_to_load_says_why(keyed: Server) -> None:
    assert keyed.client.put("/models/bad", json={"model": "crash-on-start"}).status_code == 200
    failed = cli(keyed, "models", "load", "bad", "--wait", check=False)
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1].startswith("vllm-bootstrap: bad did not load: ")
    assert "RuntimeError" in failed.stderr.splitlines()[-1]


def test_errors_say_what_to_do(keyed: Server, tmp_path: Path) -> None:
    refused = cli(keyed, "ps", key="wrong", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("vllm-bootstrap: the server answered 401: ")
    assert refused.stderr.endswith(" (pass --key or set VLLM_ACCESS_KEY)\n")
    gone = cli(keyed, "ps", env={"VLLM_BOOTSTRAP_URL": "http://127.0.0.1:9"}, check=False)
    assert gone.stderr.startswith("vllm-bootstrap: cannot reach the server at http://127.0.0.1:9:")
    assert gone.stderr.endswith("(is it running? pass --url or set VLLM_BOOTSTRAP_URL)\n")

    line = {"custom_id": "r", "method": "POST", "url": "/v1/completions", "body": {"model": "m"}}
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps(line) + "\n" + json.dumps({**line, "method": "GET"}) + "\n")
    submit = ("batch", "submit", str(requests), "--endpoint", "/v1/completions", "--wait")
    failed = cli(keyed, *submit, check=False)
    batch_id, status = failed.stdout.split()
    assert (failed.returncode, status) == (1, "failed")
    why = 'line 2: invalid_method: `method` must be "POST"'
    assert failed.stderr.splitlines()[-2:] == [
        f"vllm-bootstrap: batch {batch_id} ended failed",
        f"  {why}",
    ]
    assert cli(keyed, "batch", "status", batch_id).stdout.splitlines()[1:] == [f"  {why}"]


def test_a_finished_batch_shows_its_real_duration_and_rate(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    # Each answer takes 1.1 s: the batch runs past a second, which whole-second stamps show.
    server = start_server(VLLM_ACCESS_KEY=KEY, FAKE_VLLM_LATENCY_SECONDS="1.1")
    server.launch_ready(model="m", gpu_ids=[0])
    body = {"model": "m", "prompt": "p", "max_tokens": 1}
    lines = [
        {"custom_id": f"r{n}", "method": "POST", "url": "/v1/completions", "body": body}
        for n in range(3)
    ]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(line) + "\n" for line in lines))
    submitted = cli(
        server, "batch", "submit", str(requests), "--endpoint", "/v1/completions", "--wait"
    )
    batch_id = submitted.stdout.split()[0]
    done = json.loads(cli(server, "batch", "status", batch_id, "--json").stdout)
    seconds = done["completed_at"] - done["in_progress_at"]
    assert seconds >= 1
    assert cli(server, "batch", "status", batch_id).stdout == (
        f"{batch_id} completed   [{'#' * 30}] 3/3 (0 failed) in {seconds} s, "
        f"{3 / seconds:.1f} req/s\n"
    )
    assert cli(server, "batch", "list", "-q").stdout == f"{batch_id}\n"


def test_tables_fit_the_terminal_and_are_never_cut_when_piped(keyed: Server) -> None:
    model = "org/a-model-whose-name-is-longer-than-any-terminal-column-should-be"
    launch_id = keyed.launch_ready(model=model, gpu_ids=[0])["launch_id"]
    terminal = Terminal(keyed, "ps", columns=80)
    assert terminal.finish() == 0
    shown = terminal.seen.splitlines()
    assert max(map(len, shown)) <= 80
    headers = ["ID", "STATE", "PHASE", "SERVES", "MODEL", "GPUS", "PORT", "IN FLIGHT"]
    assert [name for name in headers if f"{name}  " in f"{shown[0]}  "] == headers  # whole
    assert shown[1].split()[:3] == [launch_id, "ready", "ready"]  # the id is never cut
    assert any(cell.endswith("…") and model.startswith(cell[:-1]) for cell in shown[1].split())
    assert model in cli(keyed, "ps").stdout  # piped: whole
    assert json.loads(cli(keyed, "ps", "--json").stdout)[0]["model"] == model


def test_table_cells_are_escaped_before_they_are_measured() -> None:
    hostile = "a\x1b[2Jb\nc"  # clears the screen; a newline would break the row
    lines = output.table([["id1", hostile, "x"]], ["ID", "NAME", "LAST"], width=40).splitlines()
    assert lines[1] == "id1  a\\x1b[2Jb\\nc  x"
    assert lines[0].index("LAST") == lines[1].rindex("x")  # measured as shown: aligned


# --------------------------------------------------------------------- chat


def test_chat_streams_one_answer_for_a_prompt(keyed: Server) -> None:
    keyed.launch_ready(model="m", gpu_ids=[0])
    answer = cli(keyed, "chat", "m", "--prompt", "Hi")
    assert answer.stdout == "".join(f" tok{n}" for n in range(16)) + "\n"  # the stand-in's
    unknown = cli(keyed, "chat", "nope", "-p", "Hi", check=False)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("vllm-bootstrap: the server answered 404: ")


def test_chat_keeps_the_conversation_until_exit_and_starts_with_a_system_message(
    keyed: Server,
) -> None:
    """Each question goes with the ones before and their answers: the stand-in counts a
    prompt's tokens as the words of its messages (as JSON), and the key's usage sums them."""
    keyed.launch_ready(model="m", gpu_ids=[0])
    secret = cli(keyed, "keys", "create", "chatter").stdout.splitlines()[1]
    typed = "one\n\ntwo\n/exit\nthree\n"  # a blank line is no message; nothing after /exit
    talked = cli(keyed, "chat", "m", key=secret, stdin=typed)
    answer = "".join(f" tok{n}" for n in range(16))
    assert talked.stdout == f"{answer}\n{answer}\n"
    cli(keyed, "chat", "m", "--system", "Be brief.", "--prompt", "three", key=secret)
    first = [{"role": "user", "content": "one"}]
    second = [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "two"}]
    third = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "three"}]
    words = sum(len(json.dumps(messages).split()) for messages in (first, second, third))
    [used] = json.loads(cli(keyed, "usage", "--of", "chatter", "--group-by", "", "--json").stdout)
    assert (used["requests"], used["prompt_tokens"]) == (3, words)
    assert cli(keyed, "chat", "m", key=secret).stdout == ""  # Ctrl-D (the input's end) leaves


def test_on_a_terminal_ctrl_c_stops_an_answer_and_ctrl_d_leaves(
    start_server: ServerFactory,
) -> None:
    server = start_server(VLLM_ACCESS_KEY=KEY, FAKE_VLLM_TOKEN_DELAY_SECONDS="0.2")
    server.launch_ready(model="m", gpu_ids=[0])
    terminal = Terminal(server, "chat", "m")
    assert terminal.read_until(">>> ").startswith(f"m at {server.url}/v1; /exit or Ctrl-D")
    terminal.type("one\n")
    terminal.read_until(" tok2")  # streamed as it is written
    terminal.type("\x03")  # Ctrl-C: that answer stops, the chat goes on
    assert " tok15" not in terminal.read_until(">>> ")
    terminal.type("two\n")
    assert terminal.read_until(">>> ").endswith(" tok14 tok15\n\n>>> ")
    terminal.type("\x04")  # Ctrl-D
    assert terminal.finish() == 0


def test_chat_without_the_openai_package_says_how_to_install_it(
    keyed: Server, tmp_path: Path
) -> None:
    hidden = tmp_path / "no-openai" / "openai"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('No module named openai')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(hidden.parent), os.environ.get("PYTHONPATH", "")])}
    missing = cli(keyed, "chat", "m", "-p", "Hi", env=env, check=False)
    assert missing.returncode == 1
    assert missing.stderr == (
        "vllm-bootstrap: `vllm-bootstrap chat` needs the openai package: pip install "
        "'vllm-bootstrap[client]' (or pip install openai; in this project, uv sync)\n"
    )
