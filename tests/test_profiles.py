"""Model profiles: stored by name through the API, declared in a file read at start-up,
refused with a message that names the field."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.harness import Server, standin_env
from tests.test_launch import child_environ


def test_a_profile_is_stored_listed_and_deleted(server: Server) -> None:
    body = {"model": "Qwen/Qwen3-8B", "gpu_count": 1, "idle_ttl_seconds": 600, "pinned": True}
    put = server.client.put("/models/qwen3-8b", json=body)
    assert put.status_code == 200, put.text
    assert put.json()["name"] == "qwen3-8b"
    assert server.client.get("/models/qwen3-8b").json()["idle_ttl_seconds"] == 600
    assert [p["name"] for p in server.client.get("/models").json()] == ["qwen3-8b"]
    assert server.client.delete("/models/qwen3-8b").json() == {"name": "qwen3-8b", "deleted": True}
    assert server.client.get("/models/qwen3-8b").status_code == 404


def test_a_name_with_a_slash_is_one_profile(server: Server) -> None:
    assert server.client.put("/models/org/model", json={"model": "org/model"}).status_code == 200
    assert server.client.get("/models/org/model").json()["model"] == "org/model"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "body.model: Field required"),
        ({"model": "m", "gpu_count": 1, "gpu_ids": [0]}, "gpu_count or gpu_ids, not both"),
        ({"model": "m", "gpu_count": 0}, "body.gpu_count"),
        ({"model": "m", "extra_args": ["--served-model-name", "x"]}, "the profile sets it"),
        ({"model": "m", "extra_args": ["--port", "1"]}, "set `port` instead"),
        ({"model": "m", "idle_ttl_seconds": -1}, "body.idle_ttl_seconds"),
        ({"model": "m", "sleep": "yes"}, "body.sleep"),
        (
            {"model": "m", "priority_scheduling": True, "extra_args": ["--scheduling-policy=fcfs"]},
            "priority_scheduling contradicts --scheduling-policy 'fcfs'",
        ),
        (
            {"model": "m", "priority_scheduling": True, "extra_args": ["--scheduling-policy"]},
            "--scheduling-policy in extra_args needs a value",
        ),
        ({"model": "m", "unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_profile_names_the_field(server: Server, body: dict, fragment: str) -> None:
    response = server.client.put("/models/p", json=body)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]
    assert server.client.get("/models").json() == []


@pytest.mark.parametrize(
    "path", ["/models/%2E%2E/proxy/zzz", "/models/a/%2E/b", "/models/a//b", "/models/a/"]
)
def test_a_name_with_an_empty_dot_or_dot_dot_segment_is_refused(server: Server, path: str) -> None:
    response = server.client.put(path, json={"model": "m"})
    assert response.status_code == 422, response.text
    assert "none of them empty, '.' or '..'" in response.json()["detail"]
    assert server.client.get("/models").json() == []


def test_deeply_nested_json_is_a_400_not_a_traceback(server: Server) -> None:
    body = '{"model": "m", "env": ' + "[" * 5000 + "]" * 5000 + "}"
    response = server.client.put(
        "/models/p", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == "the body must be a JSON object"
    assert "Traceback" not in server.output()
    assert "RecursionError" not in server.output()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_non_finite_ttl_is_refused(server: Server, value: str) -> None:
    body = '{"model": "m", "idle_ttl_seconds": ' + value + "}"
    response = server.client.put(
        "/models/p", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert "idle_ttl_seconds" in str(response.json()["detail"])


def test_profiles_from_the_file_are_loaded_at_start_up(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - name: small\n    model: org/small\n    preload: true\n")
    server = start_server(VLLM_BOOTSTRAP_MODELS_FILE=str(models))
    assert server.client.get("/models/small").json()["preload"] is True


def test_profiles_from_an_environment_variable_alone_are_loaded_beside_the_files(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("- {name: from-file, model: org/a}\n")
    server = start_server(
        VLLM_BOOTSTRAP_MODELS_FILE=str(models),
        VLLM_BOOTSTRAP_MODELS='[{"name": "from-env", "model": "org/b", "idle_ttl_seconds": 60}]',
    )
    names = sorted(profile["name"] for profile in server.client.get("/models").json())
    assert names == ["from-env", "from-file"]
    assert server.client.get("/models/from-env").json()["idle_ttl_seconds"] == 60
    load = server.client.post("/models/from-env/load", params={"wait": True})
    assert load.status_code == 200, load.text
    launch = server.status(load.json()["status"]["launch_id"])
    # The control plane's own variables (one may hold many profiles) never reach vLLM.
    assert "VLLM_BOOTSTRAP_MODELS" not in child_environ(launch["pid"])


@pytest.mark.parametrize(
    ("inline", "in_file", "fragment"),
    [
        (
            "models:\n  - name: a\n    model: m\n",
            "- {name: a, model: n}\n",
            "both define the profile 'a'",
        ),
        (
            '[{"name": "b", "model": "m", "gpu_count": 0}]',
            None,
            "VLLM_BOOTSTRAP_MODELS: profile 1 ('b'): gpu_count",
        ),
        ("[{", None, "VLLM_BOOTSTRAP_MODELS: not valid YAML or JSON"),
        ("name: c", None, "VLLM_BOOTSTRAP_MODELS: expected a list of profiles"),
    ],
)
def test_a_bad_inline_declaration_stops_start_up_with_one_line_naming_the_variable(
    tmp_path: Path, inline: str, in_file: str | None, fragment: str
) -> None:
    overrides = {"VLLM_BOOTSTRAP_MODELS": inline}
    if in_file is not None:
        models = tmp_path / "models.yaml"
        models.write_text(in_file)
        overrides["VLLM_BOOTSTRAP_MODELS_FILE"] = str(models)
    env = standin_env(tmp_path, **overrides)
    result = subprocess.run(
        [sys.executable, "-m", "vllm_bootstrap", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("models:\n  - name: a\n    model: m\n    gpu_count: zero\n", "profile 1 ('a'): gpu_count"),
        ("- {name: a, model: m}\n- {name: a, model: n}\n", "the name 'a' repeats"),
        ("models: [", "not valid YAML"),
        ("42\n", "expected a list of profiles"),
    ],
)
def test_a_bad_models_file_stops_start_up_with_one_line(
    tmp_path: Path, content: str, fragment: str
) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(content)
    env = standin_env(tmp_path, VLLM_BOOTSTRAP_MODELS_FILE=str(models))
    result = subprocess.run(
        [sys.executable, "-m", "vllm_bootstrap", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_profile_stored_under_an_older_name_rule_is_set_aside_not_fatal(
    start_server: ServerFactory,
) -> None:
    first = start_server()
    assert first.client.put("/models/good", json={"model": "org/good"}).status_code == 200
    first.terminate()
    state = Path(first.env["VLLM_BOOTSTRAP_STATE_DIR"]) / "state.sqlite3"
    with sqlite3.connect(state) as db:  # what an older version accepted
        document = json.dumps({"name": "org/./old", "model": "org/old"})
        db.execute(
            "INSERT INTO model_profiles (name, document, source) VALUES (?, ?, 'api')",
            ("org/./old", document),
        )
    second = start_server(env=first.env)
    assert [profile["name"] for profile in second.client.get("/models").json()] == ["good"]
    assert "model profile 'org/./old' in" in second.output()
    assert "is not valid any more and is not served" in second.output()
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*) FROM model_profiles").fetchone()[0] == 2
