"""Files and trees this process writes as their owner: exact modes, whole writes, removal.

The extraction of what a task returns, its write-back into the repository and the copy of
inputs into a container all create files with the task's (or the repository's) permission bits,
and must get them exactly whatever the umask. A task may also leave directories read-only, or
with no mode at all, which holds their entries in place even for their owner: walking or
removing such a tree opens each directory up first.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DISK_FULL", "PERMISSION_BITS", "open_up_directories", "process_umask",
           "remove_tree", "write_all"]

PERMISSION_BITS = 0o777  # setuid, setgid and sticky never survive
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def process_umask() -> int | None:
    """The process's umask, or None if unknown (every file then gets an fchmod). Read from
    /proc: os.umask can only read it by setting it, racing other threads creating files."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def write_all(fd: int, data: bytes | memoryview) -> None:
    written = os.write(fd, data)
    if written < len(data):  # rare on a regular file: a signal, a file system near full
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view):]


def open_up_directories(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every directory under root, parents first, with its stat from before it was opened up
    to its owner (rwx added, so that it can be listed and its entries moved or removed). Each
    is opened up before the walk lists it, so iterate lazily. Symlinks are not followed."""
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        for name in dirnames:
            directory = Path(dirpath) / name
            try:
                st = os.lstat(directory)
                if not stat.S_ISDIR(st.st_mode):
                    continue  # a symlink to a directory: os.walk lists it, never enters it
                os.chmod(directory, stat.S_IMODE(st.st_mode) | 0o700)
            except OSError:
                continue  # gone meanwhile, or not ours: what uses it reports what fails
            yield directory, st


def remove_tree(path: Path) -> None:
    """shutil.rmtree(path, ignore_errors=True), also through directories a task left
    read-only: those are opened up, then removed. A plain rmtree comes first, so the usual
    tree costs no walk. What still stays is left, as rmtree would."""
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return
    try:
        os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | 0o700)
    except OSError:
        pass
    for _ in open_up_directories(path):
        pass
    shutil.rmtree(path, ignore_errors=True)
