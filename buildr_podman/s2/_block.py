"""One S2 block in, one block out: picks the fastest decoder and encoder available."""

from __future__ import annotations

from types import ModuleType

import cramjam

from . import _block_py
from ._block_py import BlockError, read_decoded_len

__all__ = ["BlockError", "accelerated", "decode_block", "encode_block"]

_accel: ModuleType | None
try:
    from . import _s2block as _accel  # type: ignore[attr-defined,no-redef]  # setup.py builds it
except ImportError:  # pragma: no cover - depends on the install
    _accel = None

_snappy_decompress = cramjam.snappy.decompress_raw
_snappy_compress = cramjam.snappy.compress_raw
_SnappyError = cramjam.DecompressionError


def accelerated() -> bool:
    """True when the compiled S2 block decoder is in use."""
    return _accel is not None


def decode_block(body: memoryview, limit: int) -> memoryview:
    """Decode one block of at most `limit` bytes; raises BlockError if it is corrupt.

    Most blocks (all of ours) are plain Snappy, which the compiled Snappy library
    decodes fastest. It rejects S2's repeat codes (offset 0), and then the S2
    decoder starts over: compiled if built, else pure Python. Correctness rests
    on the S2 decoders alone; the chunk CRC is checked by the caller either way.
    """
    n, _ = read_decoded_len(body)
    # Checked here because the Snappy library would allocate whatever the block claims.
    if n > limit:
        raise BlockError(f"block claims {n} bytes, more than the limit of {limit}", 0)
    try:
        return memoryview(_snappy_decompress(body))
    except _SnappyError:
        pass  # S2-only codes, or corruption that the S2 decoder will name
    return memoryview(decode_block_s2(body, limit))


def decode_block_s2(body: memoryview | bytes, limit: int) -> bytes | bytearray:
    """Decode with the S2 decoder alone: compiled when available."""
    if _accel is None:
        return _block_py.decode_block(bytes(body), limit)
    try:
        out: bytes = _accel.decode(body, limit)
    except ValueError as err:
        message, pos = err.args if len(err.args) == 2 else (str(err), 0)
        raise BlockError(message, pos) from None
    return out


def decode_block_reference(body: memoryview | bytes, limit: int) -> bytearray:
    """The pure-Python decoder alone, for tests that compare it with the fast paths."""
    return _block_py.decode_block(bytes(body), limit)


def encode_block(data: bytes | bytearray | memoryview) -> memoryview | None:
    """Compress one block as Snappy (valid S2), or None when storing it is better.

    A block must save at least 1/32 of its size to be worth decompressing (the
    reference encoder draws a similar line); this also keeps every compressed
    block under the S2 maximum encoded length that readers enforce.
    """
    packed = _snappy_compress(data)
    size = len(data)
    if len(packed) >= size - (size >> 5):
        return None
    return memoryview(packed)
