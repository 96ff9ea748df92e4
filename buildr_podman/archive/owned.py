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
import stat
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the agent imports this module, and pathlib (~3 ms) nowhere else
    from pathlib import Path

__all__ = ["DISK_FULL", "PERMISSION_BITS", "process_umask", "remove_tree", "remove_tree_or_fail",
           "walk_tree", "write_all"]

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


def walk_tree(top: str | Path,
              onerror: Callable[[OSError], None] | None = None
              ) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk(top) (top-down, symlinks to directories listed among the directories but never
    entered; the caller may prune the list), with a stack instead of a recursion per level:
    Python 3.11's os.walk fails with RecursionError below ~1,000 levels, and a task may return
    a tree of any depth."""
    stack = [os.fspath(top)]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as scanner:
                entries = list(scanner)
        except OSError as exc:
            if onerror is not None:
                onerror(exc)
            continue
        dirnames: list[str] = []
        filenames: list[str] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # a symlink to a directory too, as os.walk lists it
            except OSError:
                is_dir = False
            (dirnames if is_dir else filenames).append(entry.name)
        yield directory, dirnames, filenames
        for name in reversed(dirnames):  # so that they are walked in the caller's order
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                stack.append(path)


def remove_tree(path: str | Path, dir_fd: int | None = None) -> None:
    """shutil.rmtree(path, ignore_errors=True), at any depth and through directories a task
    left read-only or closed (each is opened up to its owner first). No recursion per level
    (Python 3.11's rmtree fails with RecursionError below ~1,000 levels, which ignore_errors
    does not catch) and no path longer than a name: it goes down and back up with directory
    fds ("..") and holds one at a time. What cannot be removed is left, as rmtree would."""
    try:
        _remove(path, dir_fd, ignore_errors=True)
    except OSError:
        pass  # path itself could not be looked at or opened


def remove_tree_or_fail(path: str | Path, dir_fd: int | None = None) -> None:
    """remove_tree, but the first error is raised (a missing path is none)."""
    _remove(path, dir_fd, ignore_errors=False)


def _remove(path: str | Path, dir_fd: int | None, ignore_errors: bool) -> None:
    """A symlink is removed, never followed."""
    try:
        st = os.lstat(path, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path, dir_fd=dir_fd)
        return
    fd = _enter(path, st, dir_fd)
    # Per level below path: the name of the directory entered, and its subdirectories left.
    pending: list[tuple[str, list[str]]] = [("", _clear_files(fd, ignore_errors))]
    try:
        while pending:
            name, subdirectories = pending[-1]
            if subdirectories:
                child = subdirectories.pop()
                try:
                    child_fd = _enter(child, os.lstat(child, dir_fd=fd), fd)
                except OSError:
                    if not ignore_errors:
                        raise
                    continue  # left in place, as rmtree(ignore_errors=True) leaves it
                os.close(fd)
                fd = child_fd
                pending.append((child, _clear_files(fd, ignore_errors)))
                continue
            pending.pop()
            if pending:
                parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = parent
                _ignoring(ignore_errors, os.rmdir, name, dir_fd=fd)
    finally:
        os.close(fd)
    _ignoring(ignore_errors, os.rmdir, path, dir_fd=dir_fd)


def _ignoring(ignore_errors: bool, remove: Callable[..., None], name: str | Path,
              dir_fd: int | None) -> None:
    """remove(name, dir_fd=dir_fd); a path already gone is no error, others are unless
    ignored."""
    try:
        remove(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError:
        if not ignore_errors:
            raise


def _enter(name: str | Path, st: os.stat_result, dir_fd: int | None) -> int:
    """Opens a directory to empty it: read, search and write for its owner, added if need be."""
    if stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
        os.chmod(name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=dir_fd)
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)


def _clear_files(fd: int, ignore_errors: bool) -> list[str]:
    """Removes every entry of the directory but its subdirectories, which it returns."""
    subdirectories = []
    with os.scandir(fd) as scanner:
        entries = list(scanner)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            subdirectories.append(entry.name)
        else:
            _ignoring(ignore_errors, os.unlink, entry.name, dir_fd=fd)
    return subdirectories
