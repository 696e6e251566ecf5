"""User text in log lines: escaped, so a newline in a model name cannot forge a log line."""

from __future__ import annotations


def escaped(text: str) -> str:
    """`text` on one line: newlines, control and non-ASCII characters as escapes."""
    return text.encode("unicode_escape").decode("ascii")
