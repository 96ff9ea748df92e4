"""Opening a directory beneath a root without ever following a symlink.

Safe extraction and write-back share this walk: every component is opened relative to the
previous one with O_NOFOLLOW, so a symlink (in an archive, or in the repository) can never
redirect a write, and relative opens work for paths longer than PATH_MAX.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["open_directory_beneath"]

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def open_directory_beneath(root: Path | str | int, parts: Iterable[str], create: bool) -> int:
    """An fd of root/parts..., each component made (0o755) first when `create`. `root` may be
    an open directory's fd, which stays open and the caller's.

    Raises the OSError of the component that failed (its `filename` is that component: ELOOP
    or ENOTDIR when it is a symlink or a file); no fd is left open then.
    """
    fd = os.dup(root) if isinstance(root, int) else os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for part in parts:
        try:
            if create:
                _mkdir_if_missing(part, fd)
            next_fd = os.open(part, DIRECTORY_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            raise
        os.close(fd)
        fd = next_fd
    return fd


def _mkdir_if_missing(name: str, dir_fd: int) -> None:
    try:
        os.mkdir(name, 0o755, dir_fd=dir_fd)
    except FileExistsError:
        pass
