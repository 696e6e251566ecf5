"""The architecture, checked: imports run one way through the layers, the data plane knows
neither the supervisor nor the model wing, packages are used only through their faces, and
a client command loads nothing of the server."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SOURCE = Path(__file__).parents[1] / "src" / "vllm_bootstrap"
# Lowest first: a package may import from its own layer's modules only if it is one of them,
# and otherwise only from layers below it.
LAYERS = [
    {"__init__", "faces", "log_text", "asgi", "sqlite", "config", "background", "upstream"}
    | {"client"},
    {"launches"},
    {"downloads"},
    {"usage", "keys", "supervision", "head_guard"},
    {"serving", "monitoring", "dashboard", "cluster"},
    {"batches", "models"},
    {"api"},
    {"app", "healthcheck"},
    {"cli"},
    {"__main__"},
]
LAYER_OF = {package: depth for depth, layer in enumerate(LAYERS) for package in layer}
# Packages whose __init__ is their face (the rest list theirs in _FACE, loaded lazily).
EAGER_FACES = {"upstream", "usage", "client", "cli"}
# What a client command must not load: the server's machinery and its web framework.
SERVER_ONLY = (
    "vllm_bootstrap.api",
    "vllm_bootstrap.app",
    "vllm_bootstrap.batches",
    "vllm_bootstrap.cluster",
    "vllm_bootstrap.downloads",
    "vllm_bootstrap.keys",
    "vllm_bootstrap.monitoring",
    "vllm_bootstrap.models.swapper",
    "vllm_bootstrap.serving",
    "vllm_bootstrap.supervision",
    "vllm_bootstrap.usage",
    "fastapi",
    "uvicorn",
    "huggingface_hub",
    "ray",
)


def _package_of(path: Path) -> str:
    relative = path.relative_to(SOURCE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def project_imports() -> Iterator[tuple[str, str, str, list[str]]]:
    """(importing file, its package, imported module, imported names) for every import of
    another part of the project."""
    for path in sorted(SOURCE.rglob("*.py")):
        package = _package_of(path)
        where = str(path.relative_to(SOURCE))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):  # `import vllm_bootstrap.x.y`
                for alias in node.names:
                    if alias.name.startswith("vllm_bootstrap."):
                        target = alias.name.split(".")[1]
                        if target != package:
                            yield where, package, alias.name + ".*", []
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "vllm_bootstrap"
            ):
                module = node.module or ""
                names = [alias.name for alias in node.names]
                if module == "vllm_bootstrap":  # `from vllm_bootstrap import models`
                    yield from ((where, package, f"{module}.{name}", []) for name in names)
                    continue
                if module.split(".")[1] != package:
                    yield where, package, module, names


def _target(module: str) -> str:
    """The package (or top-level module) an import reaches."""
    return module.split(".")[1]


def test_every_package_has_a_layer() -> None:
    packages = {_package_of(path) for path in SOURCE.rglob("*.py")}
    assert packages <= set(LAYER_OF), packages - set(LAYER_OF)


def test_imports_run_one_way() -> None:
    upward = [
        f"{where} imports {module}"
        for where, package, module, _names in project_imports()
        if LAYER_OF.get(_target(module), LAYER_OF["__init__"]) >= LAYER_OF[package]
    ]
    assert upward == []


def test_the_data_plane_knows_neither_the_supervisor_nor_the_model_wing() -> None:
    reached = [
        f"{where} imports {module}"
        for where, package, module, _names in project_imports()
        if package == "serving" and _target(module) in ("supervision", "models")
    ]
    assert reached == []


def test_packages_are_used_through_their_faces() -> None:
    around = []
    for where, _package, module, names in project_imports():
        parts = module.split(".")
        if module.endswith(".*") or (len(parts) == 2 and not names):
            if (SOURCE / parts[1]).is_dir():
                around.append(f"{where} imports the module {module.removesuffix('.*')}")
        elif len(parts) > 2:
            around.append(f"{where} imports {module} past its package's face")
        elif len(parts) == 2 and (SOURCE / parts[1]).is_dir():
            face = importlib.import_module(module).__all__
            around += [f"{where} imports {module}.{name}" for name in names if name not in face]
    assert around == []


@pytest.mark.parametrize(
    "package", sorted(path.parent.name for path in SOURCE.glob("*/__init__.py"))
)
def test_each_face_names_only_what_its_package_defines(package: str) -> None:
    face = importlib.import_module(f"vllm_bootstrap.{package}")
    modules = {path.stem for path in (SOURCE / package).glob("*.py")}
    for name in face.__all__:
        assert getattr(face, name) is not None
        # A face name that is also a module's name would be shadowed once that module loads.
        assert package in EAGER_FACES or name not in modules, name


# Runs a client command to its end (no server answers on port 9), then lists what it loaded.
_RUN_A_CLIENT_COMMAND = """
import sys
from vllm_bootstrap.cli import main
try:
    main(["--url", "http://127.0.0.1:9", "models", "list"])
except SystemExit as exit:
    assert exit.code == 1, exit.code
print("\\n".join(sys.modules))
"""


def test_a_client_command_loads_nothing_of_the_server() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", _RUN_A_CLIENT_COMMAND],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [module for module in loaded if module.startswith(SERVER_ONLY)] == []
    assert "vllm_bootstrap.cli.commands" in loaded  # the command ran
    assert "vllm_bootstrap.models.file" in loaded  # `models put` reads profile files
