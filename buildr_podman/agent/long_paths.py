"""Paths longer than the kernel takes in one string, reached through a directory on the way.

A path given to a system call must fit in PATH_MAX (4,096 bytes with its NUL): a workspace
path of 4,090 bytes is fine to the file system but not as `/workspace/...`. The agent names
paths by string, so such a path made every walk raise ENAMETOOLONG, and a repository that
merely contained one failed every task with mounted inputs. `retry_long` runs a call as it is
and, only when the kernel says the name is too long, again on a short name for the same file:
`/proc/self/fd/N/TAIL`, N a directory on the way, opened a piece at a time (each piece short
enough) and closed once the call returns. Ordinary paths cost nothing more than a try.

What a call returns must not keep that short name (a DirEntry's `path`, say): it is gone with
its directory. Callers join names to the long path themselves.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["chmod", "is_directory", "lstat", "open_fd", "readlink", "retry_long", "scan",
           "short_path"]

T = TypeVar("T")
# The longest path, in bytes, given to the kernel as it is; a longer one is cut at a slash
# below this so that its tail, behind "/proc/self/fd/NNNNNNN/", still fits in PATH_MAX.
SHORT_ENOUGH = 3800
DIRECTORY_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def retry_long(call: Callable[..., T], path: str, *args: object, **kwargs: object) -> T:
    """call(path, *args, **kwargs); again on a short name for path if it was too long."""
    try:
        return call(path, *args, **kwargs)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG or len(os.fsencode(path)) < SHORT_ENOUGH:
            raise  # a name of more than 255 bytes: no other spelling helps
    with short_path(path) as short:
        return call(short, *args, **kwargs)


def scan(path: str) -> list[os.DirEntry[str]]:
    """The entries of a directory (os.scandir), at any length of its path. Use their names
    (and is_dir and friends, which the directory's listing answers), never their `path`."""
    return retry_long(_list, path)


def _list(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as scanner:
        return list(scanner)


@contextmanager
def short_path(path: str) -> Iterator[str]:
    """A name under PATH_MAX for `path`, good until the block ends."""
    encoded = os.fsencode(path)
    if len(encoded) < SHORT_ENOUGH:
        yield path
        return
    cut = encoded.rfind(b"/", 0, SHORT_ENOUGH)
    if cut <= 0:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), path)
    # The directory at the cut, then deeper ones a piece at a time while the rest is too long.
    fd = os.open(encoded[:cut], DIRECTORY_FLAGS)
    try:
        tail = encoded[cut + 1:]
        while len(tail) >= SHORT_ENOUGH:
            step = tail.rfind(b"/", 0, SHORT_ENOUGH)
            if step <= 0:
                raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), path)
            deeper = os.open(tail[:step], DIRECTORY_FLAGS, dir_fd=fd)
            os.close(fd)
            fd, tail = deeper, tail[step + 1:]
        yield os.fsdecode(b"/proc/self/fd/%d/%s" % (fd, tail))
    finally:
        os.close(fd)


def lstat(path: str) -> os.stat_result:
    return retry_long(os.lstat, path)


def readlink(path: str) -> str:
    target: str = retry_long(os.readlink, path)
    return target


def chmod(path: str, mode: int) -> None:
    retry_long(os.chmod, path, mode)


def open_fd(path: str, flags: int, mode: int = 0o777) -> int:
    return retry_long(os.open, path, flags, mode)


def is_directory(path: str) -> bool:
    """A directory, not a symlink to one; False when it is gone or cannot be looked at."""
    try:
        return stat.S_ISDIR(lstat(path).st_mode)
    except OSError:
        return False


def copy_entry(source: str, target: str) -> None:
    """A file with its bytes, mode and exact mtime, or a symlink as a link (one to a directory
    too), at any path length; `target` must not exist."""
    with short_path(source) as short_source, short_path(target) as short_target:
        if os.path.islink(short_source):
            os.symlink(os.readlink(short_source), short_target)
        else:
            shutil.copy2(short_source, short_target, follow_symlinks=False)
