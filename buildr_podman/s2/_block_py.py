"""Pure-Python S2 block decoder: the reference the compiled paths are tested against."""

from __future__ import annotations

from typing import Final

_MAX_VARINT_BYTES: Final = 5  # a decoded length is a uint32
_REPEAT_UNIT: Final = 64 << 10


class BlockError(ValueError):
    """A block is corrupt; `pos` is the byte of the block where decoding stopped."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message, pos)
        self.message = message
        self.pos = pos


def read_decoded_len(src: bytes | memoryview) -> tuple[int, int]:
    """Return (decoded length, header size) from the uvarint that starts a block."""
    value = 0
    for i in range(min(_MAX_VARINT_BYTES, len(src))):
        byte = src[i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if value > 0xFFFFFFFF:
                raise BlockError("decoded length does not fit in 32 bits", 0)
            return value, i + 1
    raise BlockError("truncated or overlong decoded-length header", 0)


def decode_block(src: bytes, limit: int) -> bytearray:
    """Decode one S2 block (Snappy tags plus S2 repeat offsets), at most `limit` bytes out.

    The output is allocated once at its declared size and filled by slice
    assignment: no regrowth, no final copy, so memory is the block and no more.
    The loop is written for CPython speed: locals only, and a short index past
    the end caught once as IndexError instead of being tested before every read.
    """
    n, s = read_decoded_len(src)
    if n > limit:
        raise BlockError(f"block claims {n} bytes, more than the limit of {limit}", 0)
    out = bytearray(n)
    end = len(src)
    d = 0
    offset = 0  # S2: a copy with offset 0 repeats the previous copy's offset
    tag_at = s
    try:
        while s < end:
            tag_at = s
            tag = src[s]
            kind = tag & 3
            if kind == 0:
                length = (tag >> 2) + 1
                s += 1
                if length > 60:
                    extra = length - 60  # 1-4 little-endian bytes hold length - 1
                    if s + extra > end:
                        raise BlockError("truncated literal length", tag_at)
                    length = int.from_bytes(src[s:s + extra], "little") + 1
                    s += extra
                if s + length > end:
                    raise BlockError("literal runs past the end of the block", tag_at)
                if length > n - d:
                    raise BlockError("literal runs past the declared block length", tag_at)
                out[d:d + length] = src[s:s + length]
                s += length
                d += length
                continue
            if kind == 1:
                length = ((tag >> 2) & 7) + 4
                copy_offset = ((tag & 0xE0) << 3) | src[s + 1]
                s += 2
                if copy_offset:
                    offset = copy_offset
                elif length > 8:
                    length, s = _repeat_length(src, s, length, tag_at)
            elif kind == 2:
                length = (tag >> 2) + 1
                offset = src[s + 1] | (src[s + 2] << 8)
                s += 3
            else:
                if s + 5 > end:
                    raise BlockError("truncated copy tag", tag_at)
                length = (tag >> 2) + 1
                offset = int.from_bytes(src[s + 1:s + 5], "little")
                s += 5
            if offset == 0 or offset > d:
                raise BlockError(f"copy offset {offset} points before the start of the block",
                                 tag_at)
            if length > n - d:
                raise BlockError("copy runs past the declared block length", tag_at)
            start = d - offset
            if offset >= length:
                out[d:d + length] = out[start:start + length]
            else:
                _repeat_into(out, d, offset, length)
            d += length
    except IndexError:
        raise BlockError("truncated copy tag", tag_at) from None
    if d != n:
        raise BlockError(f"block decodes to {d} bytes but declares {n}", end)
    return out


def _repeat_into(out: bytearray, d: int, offset: int, length: int) -> None:
    """An overlapping copy: the output repeats its last `offset` bytes for `length` bytes.

    Written in pieces of at most about 64 KiB (a whole number of periods each), so
    a 4 MiB run costs no 4 MiB temporary.
    """
    unit = out[d - offset:d] * max(1, _REPEAT_UNIT // offset)
    stop = d + length
    while d < stop:
        step = min(len(unit), stop - d)
        out[d:d + step] = unit if step == len(unit) else unit[:step]
        d += step


def _repeat_length(src: bytes, s: int, code: int, tag_at: int) -> tuple[int, int]:
    """Length of an S2 repeat whose 3-bit code (here code + 4 = 9..11) says extra bytes follow."""
    if code == 9:
        return src[s] + 8, s + 1
    if code == 10:
        return (src[s] | (src[s + 1] << 8)) + 260, s + 2
    if s + 3 > len(src):
        raise BlockError("truncated repeat length", tag_at)
    return int.from_bytes(src[s:s + 3], "little") + 65540, s + 3
