"""Writing a file whole or not at all: the one way the caches and memos replace their files.

A reader at the same moment, or after a kill at any moment, sees the old file or the new one,
never a part: the bytes go to a temporary file on the same file system first, which then
replaces the target by a rename. Without `tempfile`, whose import (random, shutil) would cost
every command that only refreshes a memo.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(target: Path, data: bytes, *, temporary_dir: Path | None = None) -> None:
    """Replaces `target` with `data` (mode 0600). The temporary file goes beside it, or into
    `temporary_dir` (same file system), where a sweep can find what a killed writer left.
    On failure `target` is as it was, the temporary file is gone, and the error is raised."""
    directory = target.parent if temporary_dir is None else temporary_dir
    # pid and random bits: two processes, or two threads, never share a temporary file
    temporary = directory / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with open(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
