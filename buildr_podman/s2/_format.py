"""Wire constants of the S2 stream format and its masked CRC-32C."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Final

# Uncompressed size of one block: S2 allows up to 4 MiB, Snappy framing only 64 KiB.
MAX_BLOCK_SIZE: Final = 4 << 20
MAX_SNAPPY_BLOCK_SIZE: Final = 1 << 16
DEFAULT_BLOCK_SIZE: Final = 1 << 20

HEADER_SIZE: Final = 4  # chunk type (1 byte) + body length (3 bytes, little endian)
CHECKSUM_SIZE: Final = 4

S2_MAGIC: Final = b"S2sTwO"
SNAPPY_MAGIC: Final = b"sNaPpY"
STREAM_IDENTIFIER: Final = b"\xff\x06\x00\x00" + S2_MAGIC

CHUNK_COMPRESSED: Final = 0x00
CHUNK_UNCOMPRESSED: Final = 0x01
LAST_UNSKIPPABLE: Final = 0x7F  # 0x02-0x7f are reserved: a reader must stop on them
CHUNK_INDEX: Final = 0x99  # S2 seek index; skippable like any 0x80-0xfd chunk
CHUNK_PADDING: Final = 0xFE
CHUNK_STREAM_IDENTIFIER: Final = 0xFF

_CRC_MASK_DELTA: Final = 0xA282EAD8


def literal_overhead(n: int) -> int:
    """Bytes a literal tag needs in front of `n` literal bytes."""
    if n == 0:
        return 0
    if n < 60:
        return 1
    if n < 1 << 8:
        return 2
    if n < 1 << 16:
        return 3
    if n < 1 << 24:
        return 4
    return 5


def max_encoded_len(n: int) -> int:
    """Largest valid S2 block for `n` bytes of data (the reference's MaxEncodedLen)."""
    return n + (n.bit_length() + 7) // 7 + literal_overhead(n)


def max_chunk_body(block_limit: int) -> int:
    """Largest body a data chunk may claim when blocks hold at most `block_limit` bytes.

    Checked on the header, before any of the body is buffered, so a hostile
    length costs nothing.
    """
    return CHECKSUM_SIZE + max_encoded_len(block_limit)


def masked_crc(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of `data`, rotated and offset as the framing format requires.

    The mask keeps a CRC computed over data that itself contains CRCs from
    being trivially predictable (framing_format.txt, section 3).
    """
    c = _crc32c()(data)
    return (((c >> 15) | (c << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


@functools.cache
def _crc32c() -> Callable[[bytes | bytearray | memoryview], int]:
    # Loaded at the first checksum, and only the crc32c package's compiled core when it is
    # found: the package's __init__ reads its own metadata and imports its command line (~18 ms
    # in the agent, where a cold run's first task waits for it), for nothing a checksum needs.
    core = _compiled_crc32c()
    if core is not None:
        return core
    import crc32c

    return crc32c.crc32c


def _compiled_crc32c() -> Callable[[bytes | bytearray | memoryview], int] | None:
    """crc32c._crc32c.crc32c, loaded from its file without running the package's __init__;
    None when it is not where the package is (the caller imports the package instead)."""
    import importlib.machinery
    import importlib.util

    package = importlib.util.find_spec("crc32c")  # a top-level name: found, not imported
    directories = (package.submodule_search_locations or []) if package else []
    candidates = (os.path.join(directory, "_crc32c" + suffix) for directory in directories
                  for suffix in importlib.machinery.EXTENSION_SUFFIXES)
    path = next((candidate for candidate in candidates if os.path.isfile(candidate)), None)
    spec = importlib.util.spec_from_file_location("crc32c._crc32c", path) if path else None
    if spec is None or spec.loader is None:
        return None
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        function: Callable[[bytes | bytearray | memoryview], int] = module.crc32c
    except (ImportError, AttributeError):
        return None
    return function
