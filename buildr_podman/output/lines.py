"""Splitting task output into lines, and the coloured `name |` prefix when tasks run at once."""

from __future__ import annotations

import os
from typing import TextIO

__all__ = ["PALETTE", "LineSplitter", "TaskLines", "colour_enabled", "is_terminal", "paint",
           "shown_path"]

MAX_LINE = 64 * 1024  # a line without an end is still shown, in pieces, past this size
#: ANSI colours for task prefixes, in the order tasks appear in the plan (no red: failures)
PALETTE = ("36", "33", "35", "32", "34", "96", "93", "95", "92", "94")


class LineSplitter:
    """Feeds bytes, yields complete lines (ending in "\\n"); `flush` returns the rest."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        data = self._pending + data
        lines = data.splitlines(keepends=True)
        if lines and not lines[-1].endswith((b"\n", b"\r")):
            self._pending = lines.pop()
        else:
            self._pending = b""
        if len(self._pending) > MAX_LINE:
            lines.append(self._pending + b"\n")
            self._pending = b""
        return [line.rstrip(b"\r\n") + b"\n" for line in lines]

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest + b"\n" if rest else b""


class TaskLines:
    """One LineSplitter per task and stream, as every line-based reporter needs."""

    def __init__(self) -> None:
        self._splitters: dict[tuple[str, str], LineSplitter] = {}

    def feed(self, task: str, stream: str, data: bytes) -> list[bytes]:
        return self._splitters.setdefault((task, stream), LineSplitter()).feed(data)

    def finish(self, task: str) -> list[tuple[str, bytes]]:
        """The unterminated rest of each stream of a finished task, as (stream, line)."""
        rests = []
        for stream in ("stdout", "stderr"):
            splitter = self._splitters.pop((task, stream), None)
            rest = splitter.flush() if splitter else b""
            if rest:
                rests.append((stream, rest))
        return rests


def colour_enabled(stream: TextIO) -> bool:
    """ANSI colours on a terminal, unless NO_COLOR (no-color.org) or TERM=dumb says no."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return is_terminal(stream)


def is_terminal(stream: object) -> bool:
    """Whether the stream is a terminal; False for one that cannot say (closed, or a stand-in
    without isatty)."""
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


def paint(text: str, code: str, enabled: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if enabled else text


def shown_path(path: str) -> str:
    """A path as text: a name that is not UTF-8 is carried as surrogates (os.fsdecode), which
    no UTF-8 stream or JSON document can hold; its odd bytes are shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
