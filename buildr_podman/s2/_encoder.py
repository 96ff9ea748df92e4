"""Incremental S2 stream encoder: cuts data into blocks and frames them, with no I/O."""

from __future__ import annotations

import struct
from typing import Final

from ._block import encode_block
from ._format import (
    CHECKSUM_SIZE,
    CHUNK_COMPRESSED,
    CHUNK_UNCOMPRESSED,
    DEFAULT_BLOCK_SIZE,
    HEADER_SIZE,
    MAX_BLOCK_SIZE,
    STREAM_IDENTIFIER,
    masked_crc,
    max_chunk_body,
)

__all__ = ["Frame", "S2Encoder", "compress"]

BytesLike = bytes | bytearray | memoryview
Frame = tuple[bytes | memoryview, ...]  # one chunk of the stream: its header and body

# Chunk header and checksum in one pack: type in the low byte, body length above it.
_CHUNK_HEAD: Final = struct.Struct("<II")


class S2Encoder:
    """Turns data fed in pieces into an S2 stream of blocks of `block_size` bytes.

    With compress=False every block is stored uncompressed: still an S2 stream
    that any reader accepts, for links where compressing costs more time than
    the bytes it saves. Blocks are Snappy-compatible, which is valid S2.
    """

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE, compress: bool = True) -> None:
        if not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"block_size must be between 1 and {MAX_BLOCK_SIZE}")
        self._block_size = block_size
        self._compress = compress
        self._pending = bytearray()  # less than one block, waiting for more data
        self._started = False

    @property
    def block_size(self) -> int:
        """Uncompressed bytes per block."""
        return self._block_size

    @property
    def max_frame_size(self) -> int:
        """The largest chunk (header, checksum and body) this encoder can emit."""
        return HEADER_SIZE + max_chunk_body(self._block_size)

    @property
    def compressing(self) -> bool:
        """False when blocks are stored uncompressed."""
        return self._compress

    def encode(self, data: BytesLike) -> bytes:
        """Add `data`; return the chunks of every block it completes (maybe just b"")."""
        return b"".join(self.encode_parts(data))

    def flush(self) -> bytes:
        """Emit the buffered partial block; the stream may go on after this."""
        return b"".join(self.flush_parts())

    def encode_parts(self, data: BytesLike) -> list[bytes | memoryview]:
        """Like `encode`, as pieces to join or write one by one (saves a copy).

        The pieces may be views of `data`: use them before changing `data`.
        """
        return [part for frame in self.encode_frames(data) for part in frame]

    def flush_parts(self) -> list[bytes | memoryview]:
        """Like `flush`, as pieces."""
        return [part for frame in self.flush_frames() for part in frame]

    def encode_frames(self, data: BytesLike) -> list[Frame]:
        """Like `encode_parts`, grouped by chunk: a sender that never splits a chunk between
        two messages lets its receiver decode each one in place, without joining pieces."""
        frames = self._stream_start()
        view = memoryview(data).cast("B")
        size = self._block_size
        if self._pending:
            fill = size - len(self._pending)
            self._pending += view[:fill]
            view = view[fill:]
            if len(self._pending) < size:
                return frames
            frames.append(self._chunk(self._pending))
            self._pending = bytearray()  # the old one is referenced by frames
        whole = len(view) - len(view) % size
        for start in range(0, whole, size):
            frames.append(self._chunk(view[start:start + size]))
        self._pending += view[whole:]
        return frames

    def flush_frames(self) -> list[Frame]:
        """Like `flush_parts`, grouped by chunk."""
        frames = self._stream_start()
        if self._pending:
            frames.append(self._chunk(self._pending))
            self._pending = bytearray()
        return frames

    def _stream_start(self) -> list[Frame]:
        """The stream identifier, in front of the encoder's first output only."""
        if self._started:
            return []
        self._started = True
        return [(STREAM_IDENTIFIER,)]

    def _chunk(self, block: bytearray | memoryview) -> Frame:
        """Frame one block: header, masked CRC of the data, then the body."""
        crc = masked_crc(block)
        packed = encode_block(block) if self._compress else None
        if packed is None:
            kind, body = CHUNK_UNCOMPRESSED, memoryview(block)
        else:
            kind, body = CHUNK_COMPRESSED, packed
        head = _CHUNK_HEAD.pack(kind | (len(body) + CHECKSUM_SIZE) << 8, crc)
        return (head, body)


def compress(data: BytesLike, block_size: int = DEFAULT_BLOCK_SIZE,
             compress: bool = True) -> bytes:
    """Encode `data` as a complete S2 stream."""
    encoder = S2Encoder(block_size, compress)
    parts = encoder.encode_parts(data)
    parts += encoder.flush_parts()
    return b"".join(parts)
