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
