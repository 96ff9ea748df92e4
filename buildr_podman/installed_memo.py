"""Facts read from what is installed in this Python, remembered in a file until that changes.

Installing, upgrading or removing a distribution adds or removes its metadata directory in a
directory of sys.path, which moves that directory's mtime. So what importlib.metadata says
(versions, entry points) holds for as long as the Python, its C library and every sys.path
directory's inode and mtime are the same. Asking importlib.metadata costs ~10 ms (its import,
then reading each distribution's metadata); a memo costs a small read and a stat per sys.path
entry. What goes unseen: metadata edited in place, by hand rather than by an installer.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from buildr_podman.atomic_file import write_atomically

__all__ = ["SETTLE_SECONDS", "libc_version", "remembered", "sys_path_signature"]

# A directory changed this recently is not trusted yet: a second change within the same clock
# tick as the first would keep its mtime.
SETTLE_SECONDS = 2.0


def remembered(memo: Path, compute: Callable[[], Iterable[str]], *,
               fresh: bool = False) -> list[str]:
    """The lines of compute(), read from `memo` while it was written for this Python as it
    is now; computed (and remembered, once settled) otherwise, or when `fresh`."""
    signature, settled = sys_path_signature()
    if not fresh:
        try:
            remembered_signature, *lines = memo.read_text().splitlines()
            if remembered_signature == signature:
                return lines
        except (OSError, ValueError):
            pass  # missing or damaged: computed again
    lines = list(compute())
    if settled:
        _write(memo, [signature, *lines])
    return lines


def sys_path_signature() -> tuple[str, bool]:
    """A digest of the Python, the C library and every sys.path directory's identity and
    mtime; and whether none of them changed in the last SETTLE_SECONDS."""
    digest = hashlib.sha256(f"{sys.version} {sys.executable} {libc_version()}".encode())
    newest = 0.0
    for entry in sys.path:
        try:
            info = os.stat(entry or ".")
        except OSError:
            continue
        digest.update(f"{entry}\0{info.st_ino}\0{info.st_mtime_ns}\n".encode())
        newest = max(newest, info.st_mtime)
    return digest.hexdigest(), time.time() - newest > SETTLE_SECONDS


def libc_version() -> str | None:
    """The C library's name and version ("glibc 2.36"); None where it does not say."""
    return os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else "?"


def _write(memo: Path, lines: list[str]) -> None:
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(memo, ("\n".join(lines) + "\n").encode())
    except OSError:
        pass  # computed again next time
