"""Package faces: each package's `__init__` names what other packages may use, and loads a
name's module only when someone asks for it (PEP 562), so a client command that needs a
profile file's parser does not load the process machinery beside it."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_face(package: str, face: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` serving `face`: name -> the package's module defining it, or
    "module:attribute" where the module calls it something else."""

    def __getattr__(name: str) -> object:
        where = face.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = where.partition(":")
        return getattr(importlib.import_module(f"{package}.{module}"), attribute or name)

    return __getattr__
