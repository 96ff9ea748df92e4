"""A queue of received bytes that hands out exact-length pieces with as few copies as it can."""

from __future__ import annotations

from collections import deque
from typing import Final

# Pieces below this size are copied into an accumulator: a stream fed a byte at a time
# must not cost a Python object per byte. Larger pieces are kept as they came.
_SMALL: Final = 16 << 10
_EMPTY: Final = memoryview(b"")


class PendingInput:
    """Input received but not yet parsed.

    Large pieces are the caller's own bytes objects, kept without copying, and n
    bytes inside one of them are handed out as a zero-copy view: bytes cannot
    change, so the view stays valid. Small pieces are gathered in bytearrays,
    which are only ever copied out of (a view would stop them from growing or
    shrinking), so memory is bounded by what has been fed and not yet taken.
    """

    def __init__(self) -> None:
        self._pieces: deque[bytes | memoryview | bytearray] = deque()
        self._head = 0  # bytes of _pieces[0] already taken (always 0 for a bytearray)
        self.size = 0  # bytes available

    def append(self, data: bytes | memoryview) -> None:
        """Queue `data`, which must not change afterwards (bytes, or a view of bytes)."""
        if not data:
            return
        self.size += len(data)
        if len(data) >= _SMALL:
            self._pieces.append(data)
        elif self._pieces and isinstance(self._pieces[-1], bytearray):
            self._pieces[-1] += data
        else:
            self._pieces.append(bytearray(data))

    def take(self, n: int) -> memoryview:
        """Remove and return the next `n` bytes; the caller has checked `size >= n`."""
        if n == 0:
            return _EMPTY
        first = self._pieces[0]
        if self._head + n > len(first):
            return memoryview(b"".join(self._split_off(n, keep=True)))
        return self._split_off(n, keep=True)[0]

    def discard(self, n: int) -> None:
        """Drop the next `n` bytes (at most `size`)."""
        self._split_off(n, keep=False)

    def _split_off(self, n: int, keep: bool) -> list[memoryview]:
        """Remove the next `n` bytes; if `keep`, return them as views of immutable bytes."""
        views: list[memoryview] = []
        self.size -= n
        while n:
            first = self._pieces[0]
            count = min(n, len(first) - self._head)
            if isinstance(first, bytearray):
                if keep:
                    views.append(memoryview(bytes(memoryview(first)[:count])))
                del first[:count]  # cheap at the front of a bytearray
                if not first:
                    self._pieces.popleft()
            else:
                if keep:
                    views.append(memoryview(first)[self._head:self._head + count])
                self._head += count
                if self._head == len(first):
                    self._pieces.popleft()
                    self._head = 0
            n -= count
        return views
