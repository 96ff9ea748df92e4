"""Incremental S2 stream decoder: chunk framing, checksums and limits, with no I/O."""

from __future__ import annotations

import io
from typing import Final, NoReturn, TypeGuard

from ..errors import CodecError
from ._block import BlockError, decode_block
from ._format import (
    CHECKSUM_SIZE,
    CHUNK_COMPRESSED,
    CHUNK_STREAM_IDENTIFIER,
    CHUNK_UNCOMPRESSED,
    HEADER_SIZE,
    LAST_UNSKIPPABLE,
    MAX_BLOCK_SIZE,
    MAX_SNAPPY_BLOCK_SIZE,
    S2_MAGIC,
    SNAPPY_MAGIC,
    masked_crc,
    max_chunk_body,
)
from ._pending import PendingInput

__all__ = ["S2Decoder", "decompress"]

BytesLike = bytes | bytearray | memoryview

# Skippable chunks can claim 16 MiB; they are dropped as they arrive, and a reader
# asks for them in pieces of this size so they never need a buffer of their own.
_SKIP_READ_SIZE: Final = 256 << 10


class S2Decoder:
    """Decodes an S2 (or Snappy-framed) stream fed to it in pieces of any size.

    Memory stays bounded by one chunk (at most `max_block_size` plus a few bytes)
    beyond what the caller feeds in a single call: a chunk header that claims
    more is an error at once, before its body is buffered. After the first
    error every call raises it again.
    """

    def __init__(self, max_block_size: int = MAX_BLOCK_SIZE) -> None:
        if not 1 <= max_block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"max_block_size must be between 1 and {MAX_BLOCK_SIZE}")
        self._max_block = max_block_size
        self._limit = max_block_size  # lowered to 64 KiB inside a Snappy-framed stream
        self._pending = PendingInput()
        self._offset = 0  # stream offset of the next byte not yet taken from _pending
        self._chunk_start = 0  # stream offset of the chunk being read
        self._body_kind: int | None = None  # type of the chunk whose body is awaited
        self._body_len = 0
        self._skip = 0  # bytes of a skippable chunk still to drop
        self._identified = False
        self._error: CodecError | None = None

    def decode(self, data: BytesLike) -> bytes:
        """Feed `data` and return everything it completes (b"" when it ends mid-chunk).

        A few bytes can decode to 4 MiB: to bound memory when the input is not
        trusted, pull blocks one at a time with `feed` and `next_block` (S2Reader does).
        """
        self.feed(data)
        return self._drain()

    def flush(self) -> bytes:
        """Declare the end of input: return any undrained output, or raise if incomplete."""
        out = self._drain()
        if not self._identified:
            empty = self._offset == self._pending.size == 0
            self._fail(f"not an S2 stream: {'empty input' if empty else 'no stream identifier'}", 0)
        if self._skip or self._body_kind is not None:
            self._fail("truncated stream: it ends inside a chunk", self._chunk_start)
        if self._pending.size:
            self._fail("truncated stream: it ends inside a chunk header", self._offset)
        return out

    def feed(self, data: BytesLike) -> None:
        """Queue input without decoding it; `next_block` then decodes it block by block."""
        if self._error is not None:
            raise self._error
        # Copy only mutable input: the caller may reuse its buffer after we return.
        self._pending.append(data if _immutable(data) else bytes(data))

    def next_block(self) -> memoryview | None:
        """Decode the next data chunk in the fed input; None if more input is needed.

        Callers that must bound memory (a reader) pull blocks one at a time with
        this rather than `decode`, whose result holds everything the input yields.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_block()
        except CodecError as err:
            self._error = err
            raise

    @property
    def wanted(self) -> int:
        """How many more input bytes the decoder needs before it can make progress."""
        if self._skip:
            return min(self._skip, _SKIP_READ_SIZE)
        if self._body_kind is None:
            return max(1, HEADER_SIZE - self._pending.size)
        return max(1, self._body_len - self._pending.size)

    def _drain(self) -> bytes:
        # Each block is copied out and dropped at once, so the allocator hands the
        # next block the same warm memory; keeping them all to join at the end
        # costs a second output-sized allocation (page faults dominate at this speed).
        # BytesIO grows in place and getvalue() returns its buffer without a copy.
        out = io.BytesIO()
        while (block := self.next_block()) is not None:
            out.write(block)
        return out.getvalue()

    def _next_block(self) -> memoryview | None:
        pending = self._pending
        while True:
            if self._skip:
                dropped = min(self._skip, pending.size)
                if not dropped:
                    return None
                pending.discard(dropped)
                self._skip -= dropped
                self._offset += dropped
            elif self._body_kind is None:
                if pending.size < HEADER_SIZE:
                    return None
                self._read_header(pending.take(HEADER_SIZE))
            else:
                if pending.size < self._body_len:
                    return None
                kind, body = self._body_kind, pending.take(self._body_len)
                self._offset += self._body_len
                self._body_kind = None
                block = self._read_body(kind, body)
                if block is not None:
                    return block

    def _read_header(self, header: memoryview) -> None:
        """Check a chunk header; every length limit is enforced here, before buffering."""
        kind = header[0]
        length = header[1] | (header[2] << 8) | (header[3] << 16)
        start = self._chunk_start = self._offset
        self._offset += HEADER_SIZE
        if not self._identified and kind != CHUNK_STREAM_IDENTIFIER:
            self._fail(f"not an S2 stream: it starts with chunk type 0x{kind:02x}, "
                       "not a stream identifier", start)
        if kind == CHUNK_STREAM_IDENTIFIER:
            if length != len(S2_MAGIC):
                self._fail(f"stream identifier chunk has length {length}, not 6", start)
        elif kind == CHUNK_COMPRESSED:
            if not CHECKSUM_SIZE < length <= max_chunk_body(self._limit):
                self._fail(f"compressed chunk length {length} is out of range for blocks "
                           f"of at most {self._limit} bytes", start)
        elif kind == CHUNK_UNCOMPRESSED:
            if not CHECKSUM_SIZE <= length <= CHECKSUM_SIZE + self._limit:
                self._fail(f"uncompressed chunk length {length} is out of range for blocks "
                           f"of at most {self._limit} bytes", start)
        elif kind <= LAST_UNSKIPPABLE:
            self._fail(f"unsupported unskippable chunk type 0x{kind:02x}", start)
        else:
            self._skip = length  # padding, the seek index, or another skippable chunk
            return
        self._body_kind = kind
        self._body_len = length

    def _read_body(self, kind: int, body: memoryview) -> memoryview | None:
        """Decode and verify a complete chunk body; None for the stream identifier."""
        start = self._chunk_start
        if kind == CHUNK_STREAM_IDENTIFIER:
            self._start_stream(bytes(body), start)
            return None
        if kind == CHUNK_UNCOMPRESSED:
            data = body[CHECKSUM_SIZE:]
        else:
            try:
                data = decode_block(body[CHECKSUM_SIZE:], self._limit)
            except BlockError as err:
                self._fail(f"corrupt compressed block: {err.message}",
                           start + HEADER_SIZE + CHECKSUM_SIZE + err.pos)
        if masked_crc(data) != int.from_bytes(body[:CHECKSUM_SIZE], "little"):
            self._fail("checksum mismatch: the chunk's data is corrupt", start)
        return data

    def _start_stream(self, magic: bytes, start: int) -> None:
        """A stream identifier begins a stream, also in the middle of the input."""
        if magic == S2_MAGIC:
            self._limit = self._max_block
        elif magic == SNAPPY_MAGIC:
            # The Snappy framing format caps a chunk at 64 KiB of data.
            self._limit = min(self._max_block, MAX_SNAPPY_BLOCK_SIZE)
        else:
            self._fail(f"unknown stream identifier {magic!r}", start)
        self._identified = True

    def _fail(self, message: str, offset: int) -> NoReturn:
        self._error = CodecError(message, offset)
        raise self._error


def _immutable(data: BytesLike) -> TypeGuard[bytes | memoryview]:
    """bytes, or a read-only view of bytes (a received message's data): safe to keep."""
    if isinstance(data, memoryview):  # of bytes, and counted in bytes
        return isinstance(data.obj, bytes) and data.contiguous and data.itemsize == 1
    return isinstance(data, bytes)


def decompress(data: BytesLike, max_block_size: int = MAX_BLOCK_SIZE) -> bytes:
    """Decode a complete S2 or Snappy-framed stream held in memory."""
    decoder = S2Decoder(max_block_size)
    out = decoder.decode(data)
    tail = decoder.flush()
    return out + tail if tail else out
