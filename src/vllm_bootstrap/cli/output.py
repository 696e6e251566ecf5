"""What read commands print: aligned columns for people, `--json` for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(value) for value in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f} GiB"
