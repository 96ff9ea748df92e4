"""Keeping `secret_environment` values out of everything the host shows or writes.

The values reach the task only through the agent's run request (never the container's own
environment, which `podman inspect` shows). Whatever comes back — output, agent notes, errors —
passes a Redactor first, so terminals, JSON events, `<out_dir>/<task>.log` and reports only
ever see MASK. Output arrives in chunks that may split a value, so a chunk's tail that could
be the start of a value is held back until the next chunk (or the end) decides.
"""

from __future__ import annotations

from collections.abc import Iterable

from buildr_podman.model import Task

__all__ = ["MASK", "Redactor", "redact", "run_secret_values", "secret_values"]

MASK = "***"


def secret_values(task: Task) -> tuple[str, ...]:
    """The values to hide, longest first (so that a value containing another is masked whole)."""
    values = {value for _, value in task.secret_environment if value}
    return tuple(sorted(values, key=len, reverse=True))


def run_secret_values(tasks: Iterable[Task]) -> tuple[str, ...]:
    """Every secret value of the run, longest first. Each task's output is masked of all of
    them, not only of its own: a task may have captured another's (through a file the other
    left, or a program it replaced), and must not print it either."""
    values = {value for task in tasks for _, value in task.secret_environment if value}
    return tuple(sorted(values, key=len, reverse=True))


def redact(text: str, values: tuple[str, ...]) -> str:
    """`text` with every secret value replaced by MASK."""
    for value in values:
        text = text.replace(value, MASK)
    return text


class Redactor:
    """Masks secret values in a byte stream fed in chunks (one Redactor per output stream)."""

    def __init__(self, values: tuple[str, ...]) -> None:
        self._values = tuple(v.encode("utf-8", "surrogateescape") for v in values)
        self._mask = MASK.encode()
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        """What can be shown now; a tail that may begin a value waits for more data."""
        if not self._values:
            return data
        text = self._mask_all(self._pending + data)
        keep = self._unsafe_tail(text)
        self._pending = text[len(text) - keep:] if keep else b""
        return text[:len(text) - keep]

    def flush(self) -> bytes:
        """The held-back tail, at the end of the stream (it turned out not to be a value)."""
        rest, self._pending = self._pending, b""
        return rest

    def _mask_all(self, data: bytes) -> bytes:
        for value in self._values:
            data = data.replace(value, self._mask)
        return data

    def _unsafe_tail(self, data: bytes) -> int:
        """The length of the longest tail of `data` that is a proper prefix of some value."""
        longest = 0
        for value in self._values:
            for size in range(min(len(value) - 1, len(data)), longest, -1):
                if data.endswith(value[:size]):
                    longest = size
                    break
        return longest
