"""Keeps glibc from handing every freed megabyte back to the kernel: the agent's archive stream.

Each archive message is a few short-lived megabyte buffers (the message the packer makes,
gRPC's own). glibc serves allocations above its mmap threshold (128 KiB at first)
with a fresh mmap and unmaps them when freed, and it trims the heap's top once more than
twice that is free: either way every chunk lands on new pages, which cost a page fault each
(256 per megabyte, several times per chunk). Measured here with the agent's own messages
over a unix socket: 256 MiB in 1 MiB messages took 0.53 s as glibc ships, 0.21 s with these
settings in the sending process. Setting one limit alone is worse than neither: it switches
off glibc's own adjustment of the other.

Only the agent sets it. The receiving host gained under a tenth (it keeps the received
messages and copies nothing since archive_wire.py), and its peak memory, a target of its
own, rose from 88 to 120 MB in the 256 MiB case: freed memory is kept for reuse, so a
burst of messages waiting in gRPC stays resident.
"""

from __future__ import annotations

__all__ = ["keep_freed_memory"]

# mallopt(3) parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper bound for this setting on 64-bit systems
TRIM_THRESHOLD = 128 << 20

_done = False


def keep_freed_memory() -> bool:
    """Applies the settings once per process; False where there is no glibc (nothing lost
    but speed)."""
    global _done
    if _done:
        return True
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): their allocators behave otherwise anyway
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
