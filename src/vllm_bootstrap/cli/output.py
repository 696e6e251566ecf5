"""What read commands print: aligned columns for people (fitted to a terminal's width),
`--json` for scripts (never fitted: what a script reads must not depend on a window)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel

# C0 controls but newline and tab, DEL, and C1 controls: what can move the cursor, clear the
# screen, set the title or write the clipboard (ESC [2J, OSC 52, and CSI as U+009B).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown(text: str) -> str:
    """Text from the server as the terminal may show it: control characters escaped
    (ESC becomes the four characters \\x1b), so a name, log line or message cannot drive
    the terminal. Newlines and tabs stay."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


# A column is not cut below this many characters, nor below its header: past that a
# line wraps instead.
MIN_COLUMN = 8
_GAP = "  "


def table(rows: Sequence[Sequence[object]], header: Sequence[str], width: int | None = None) -> str:
    """Aligned columns; cut to `width` (default: the terminal's, when stdout is one) by
    shortening the widest column, its cells ending in an ellipsis. The first column (the
    id or name that other commands take) is never cut. Piped, nothing is."""
    # Escaped before measuring: an escape is four characters wide on the screen.
    cells = [[_cell(value) for value in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    limit = width if width is not None else terminal_width()
    if limit is not None:
        widths = fitted(widths, [max(len(name), MIN_COLUMN) for name in header], limit)
    return "\n".join(
        _GAP.join(
            cut(value, width).ljust(width) for value, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in cells
    )


def _cell(value: object) -> str:
    """A table cell on one line: control characters escaped, newlines and tabs too."""
    return shown(str(value)).replace("\n", "\\n").replace("\t", "\\t")


def terminal_width() -> int | None:
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def fitted(widths: list[int], floors: list[int], limit: int) -> list[int]:
    """Column widths whose line fits in `limit`: the widest column past the first gives a
    character at a time (so two wide ones share the cut), none below its floor."""
    widths = list(widths)
    overflow = sum(widths) + len(_GAP) * (len(widths) - 1) - limit
    while overflow > 0:
        cuttable = [column for column in range(1, len(widths)) if widths[column] > floors[column]]
        if not cuttable:
            break
        widths[max(cuttable, key=widths.__getitem__)] -= 1
        overflow -= 1
    return widths


def cut(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: width - 1] + _ellipsis()


def _ellipsis() -> str:
    # A terminal that cannot show "…" (an ASCII locale) gets a dot instead.
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "…".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "."
    return "…"


def emit(as_json_asked: bool, answer: Any, text: str) -> None:
    """`--json`: the server's answer as JSON (whose escaping covers control characters);
    else `text`, with what came from the server made safe for a terminal."""
    print(as_json(answer) if as_json_asked else shown(text))


def ids(values: Iterable[str]) -> None:
    """`-q`: one id a line, for `xargs`."""
    for value in values:
        print(shown(value))


def as_json(value: Any) -> str:
    return json.dumps(_plain(value), indent=2, sort_keys=True)


def _plain(value: Any) -> Any:
    """The client's typed answers as the server sent them: the fields it sent (and ones
    this client does not know), none of the client's defaults."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


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
