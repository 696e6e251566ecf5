"""What read commands print: aligned columns for people, `--json` for scripts."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

# C0 controls but newline and tab, DEL, and C1 controls: what can move the cursor, clear the
# screen, set the title or write the clipboard (ESC [2J, OSC 52, and CSI as U+009B).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown(text: str) -> str:
    """Text from the server as the terminal may show it: control characters escaped
    (ESC becomes the four characters \\x1b), so a name, log line or message cannot drive
    the terminal. Newlines and tabs stay."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


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


_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(value: float | None) -> str:
    """Bytes for people: 512 B, 3.0 MiB, 1.2 GiB (binary units, as `du -h` and the Hub's
    file sizes are read)."""
    if value is None:
        return "-"
    unit = 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.0f} {_UNITS[unit]}" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def duration(seconds: float | None) -> str:
    """A time left for people: 42 s, 3 min 5 s, 2 h 10 min."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"
