"""File-object faces of the codec: S2Reader decodes from a source, S2Writer encodes to a sink."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any, Final, Protocol

from ._decoder import S2Decoder
from ._encoder import S2Encoder
from ._format import DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE

__all__ = ["S2Reader", "S2Writer"]

# Reading more than one chunk at a time saves calls; read1 returns early when less is
# available, so this never waits for data the other end has not sent yet.
_READ1_SIZE: Final = 64 << 10
_EMPTY: Final = memoryview(b"")


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes | None: ...


class _Writable(Protocol):
    def write(self, data: Any, /) -> int | None: ...


class S2Reader(io.RawIOBase):
    """Reads the decompressed bytes of an S2 stream.

    `source` is a binary file object (anything with `read`), an iterable of bytes
    chunks (e.g. messages as they arrive), or a whole stream as bytes. Memory is bounded by one block whatever
    the stream's length. Corrupt or truncated input raises CodecError.
    The source is closed with the reader only when closefd is true.
    """

    def __init__(self, source: _Readable | Iterable[bytes | memoryview], *,
                 max_block_size: int = MAX_BLOCK_SIZE, closefd: bool = False) -> None:
        super().__init__()
        self._source = source
        self._closefd = closefd
        self._decoder = S2Decoder(max_block_size)
        self._chunks: Iterator[bytes | memoryview] | None = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._chunks = iter([bytes(source)])  # a whole stream in memory
        elif not hasattr(source, "read"):
            self._chunks = iter(source)
        self._block = _EMPTY  # decoded bytes not yet returned
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:  # buffer: a writable bytes-like object
        block = self._unread()
        if block is None:
            return None if not self._eof else 0
        with memoryview(buffer) as target, target.cast("B") as out:
            n = min(len(out), len(block))
            out[:n] = block[:n]
        self._consume(block, n)
        return n

    def read(self, size: int | None = -1) -> bytes | None:
        """Return up to `size` bytes, at most one block's worth (all, if size < 0)."""
        if size is None or size < 0:
            return self.readall()
        block = self._unread()
        if block is None:
            return None if not self._eof else b""
        out = bytes(block[:size])
        self._consume(block, size)
        return out

    def read_view(self, size: int) -> memoryview:
        """Like `read`, without its copy: up to `size` decoded bytes as a read-only view (b""
        at the end). The reader never writes into memory it has handed out, so the view
        stays valid for as long as it is held."""
        block = self._unread()
        if block is None:
            return _EMPTY
        out = block[:size].toreadonly()
        self._consume(block, size)
        return out

    def readall(self) -> bytes:
        """Return the rest of the stream (its whole size is then held in memory)."""
        parts: list[bytes | memoryview] = []
        while (block := self._unread()) is not None:
            parts.append(block)
            self._block = _EMPTY
        return b"".join(parts)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self._closefd:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()

    def _consume(self, block: memoryview, n: int) -> None:
        # An empty slice would still pin the whole block: drop it instead, so the
        # old block is freed before the next one is decoded.
        self._block = block[n:] if n < len(block) else _EMPTY

    def _unread(self) -> memoryview | None:
        """Decoded bytes not yet returned: None at the end, or if a non-blocking source is dry."""
        self._checkClosed()
        while not self._block:
            if self._eof:
                return None
            block = self._decoder.next_block()
            if block is not None:
                self._block = block
                continue
            data = self._pull(self._decoder.wanted)
            if data is None:
                return None  # non-blocking source with nothing to read yet
            if data:
                self._decoder.feed(data)
            else:
                self._decoder.flush()  # raises if the stream stops inside a chunk
                self._eof = True
        return self._block

    def _pull(self, wanted: int) -> bytes | bytearray | memoryview | None:
        """The next input: b"" at the end of the source, None if it would block."""
        if self._chunks is not None:
            for chunk in self._chunks:
                if not isinstance(chunk, (bytes, bytearray, memoryview)):
                    raise TypeError(f"S2Reader source yielded {type(chunk).__name__}, not bytes")
                if chunk:
                    return chunk  # the decoder copies only what may change
            return b""
        read1 = getattr(self._source, "read1", None)
        if read1 is not None:
            data: bytes | None = read1(max(wanted, _READ1_SIZE))
        else:
            # Plain read may wait for all it was asked: ask only for what the decoder needs.
            data = self._source.read(wanted)  # type: ignore[union-attr]
        return data


class S2Writer(io.RawIOBase):
    """Writes an S2 stream of the data written to it into `sink`.

    Data is buffered up to one block. flush() emits the partial block as a shorter
    chunk (the stream stays valid and can go on) and flushes the sink; close()
    flushes and closes the sink only when closefd is true. With compress=False
    blocks are stored uncompressed (see S2Encoder).
    """

    def __init__(self, sink: _Writable, block_size: int = DEFAULT_BLOCK_SIZE,
                 compress: bool = True, *, closefd: bool = False) -> None:
        super().__init__()
        self._encoder = S2Encoder(block_size, compress)
        self._sink = sink
        self._closefd = closefd

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # data: a bytes-like object
        self._checkClosed()
        with memoryview(data) as view:
            self._send(self._encoder.encode_parts(view))
            return view.nbytes

    def flush(self) -> None:
        if self.closed:
            return
        self._send(self._encoder.flush_parts())
        sink_flush = getattr(self._sink, "flush", None)
        if sink_flush is not None:
            sink_flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()  # flushes
        finally:
            if self._closefd:
                close = getattr(self._sink, "close", None)
                if close is not None:
                    close()

    def _send(self, parts: list[bytes | memoryview]) -> None:
        """Write every piece fully; a None from write() is taken as 'all written'."""
        for part in parts:
            view = memoryview(part)
            while view:
                n = self._sink.write(view)
                if n is None or n >= len(view):
                    break
                view = view[n:]
