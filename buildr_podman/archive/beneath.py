"""Host file operations beneath a trusted directory, through fds, never following a symlink.

A task decides what lands in its out dir, and with `write_back` in the repository: any path
below the repository root may be a symlink or a directory that a task put there. So every host
file operation under the root (extraction, write-back, the input copy, logs, reports) starts
from an fd of a directory the user named (the repository root, a DEST given on the command
line) and opens each component relative to the previous one with O_NOFOLLOW and O_DIRECTORY:
a symlink can never redirect a read or a write, and relative opens work for paths longer than
PATH_MAX. The last component of a file written is created anew (O_EXCL), never opened in place,
so that neither a symlink nor a hard link planted there is written through.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from buildr_podman.archive.owned import remove_tree

__all__ = ["DIRECTORY_FLAGS", "MARK", "chmod_directory_at", "create_file_at", "is_marked",
           "lstat_at", "make_private_directory_at", "mark", "open_directory_beneath",
           "open_parent_beneath", "remove_tree_at", "same_directory"]

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
# The extended attribute that marks a file or directory as made by this tool: where the out dir
# is not the tool's own (outside .buildr/), only what carries it is ever replaced, never one of
# the user's. In the `user.` namespace: its owner may set it, no privilege needed.
MARK = "user.buildr-podman"
MARK_VALUE = b"made"
NO_XATTRS = (errno.ENOTSUP, errno.EOPNOTSUPP)


def mark(fd: int) -> None:
    """Marks the file or directory open as fd as made by this tool; nothing where its file
    system keeps no extended attributes (what is unmarked is then replaced only where the
    caller allows it)."""
    try:
        os.setxattr(fd, MARK, MARK_VALUE)
    except OSError as exc:
        if exc.errno not in (*NO_XATTRS, errno.EPERM):
            raise


def is_marked(name: str, dir_fd: int) -> bool:
    """Whether the file or directory `name` in dir_fd carries this tool's mark (a symlink
    never does). Raises OSError where its file system keeps no extended attributes."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return False
        raise
    try:
        return os.getxattr(fd, MARK) == MARK_VALUE
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return False
        raise
    finally:
        os.close(fd)


def open_directory_beneath(root: Path | str | int, parts: Iterable[str], create: bool) -> int:
    """An fd of root/parts..., each component made (0o755) first when `create` and missing.
    `root` may be an open directory's fd, which stays open and the caller's.

    Raises the OSError of the component that failed (its `filename` is that component: ELOOP
    or ENOTDIR when it is a symlink or a file); no fd is left open then.
    """
    if isinstance(root, int):
        fd, owned = root, False  # not duplicated up front: one system call less a component
    else:
        fd, owned = os.open(root, os.O_RDONLY | os.O_DIRECTORY), True
    for part in parts:
        try:
            next_fd = _open_component(part, fd, create)
        except OSError:
            if owned:
                os.close(fd)
            raise
        if owned:
            os.close(fd)
        fd, owned = next_fd, True
    return fd if owned else os.dup(fd)


def _open_component(name: str, dir_fd: int, create: bool) -> int:
    """An fd of the directory `name` in dir_fd, made first when `create` and it is missing.
    Opened first, made only when that says it is missing: the usual directory exists, and an
    extraction reaches each new one just after making it (one system call, not two)."""
    try:
        return os.open(name, DIRECTORY_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    _mkdir_if_missing(name, dir_fd)
    return os.open(name, DIRECTORY_FLAGS, dir_fd=dir_fd)


def open_parent_beneath(root: Path | str | int, path: Path, create: bool) -> tuple[int, str]:
    """(an fd of path's parent, path's last name), the parent reached from `root` without
    following a symlink. `path` is absolute below the root path, or relative to it."""
    parts = _parts_below(root, path)
    if not parts:
        raise OSError(errno.EINVAL, "names the root itself", str(path))
    return open_directory_beneath(root, parts[:-1], create), parts[-1]


def _parts_below(root: Path | str | int, path: Path) -> list[str]:
    if isinstance(root, int) or not path.is_absolute():
        parts = list(PurePosixPath(path).parts)
    else:
        parts = list(path.relative_to(root).parts)
    if ".." in parts or any(part == "/" for part in parts):
        raise OSError(errno.EINVAL, "leads out of its root", str(path))
    return [part for part in parts if part != "."]


def lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    """The entry's own stat (a symlink's, not its target's), or None when there is none."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def same_directory(fd: int, listed: os.stat_result) -> bool:
    """Whether the directory opened as fd is the one whose stat was taken when it was listed
    (a walk never descends into something that replaced it meanwhile)."""
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (listed.st_dev, listed.st_ino)


def create_file_at(name: str, dir_fd: int, mode: int = 0o644, *,
                   replace_unmarked: bool = True) -> int:
    """A new, empty file `name` in dir_fd, open for writing, marked as this tool's. Whatever
    non-directory stood there (a symlink or hard link a task planted, an earlier run's file) is
    removed first and never written through; a directory there raises IsADirectoryError, and
    an unmarked file FileExistsError unless `replace_unmarked` (it may be the user's)."""
    existing = lstat_at(name, dir_fd)
    if existing is not None:
        if stat.S_ISDIR(existing.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
        if not replace_unmarked and not is_marked(name, dir_fd):
            raise FileExistsError(errno.EEXIST, "not made by buildr-podman", name)
        os.unlink(name, dir_fd=dir_fd)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode, dir_fd=dir_fd)
    mark(fd)
    return fd


def make_private_directory_at(prefix: str, dir_fd: int) -> str:
    """tempfile.mkdtemp in dir_fd: a new 0700 directory whose name starts with prefix."""
    for _ in range(100):
        name = f"{prefix}{secrets.token_hex(4)}"
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
            return name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free name", prefix)


def chmod_directory_at(name: str, dir_fd: int, mode: int) -> None:
    """Sets the mode of the directory `name` in dir_fd; refuses a symlink (ELOOP) or a file
    (ENOTDIR). Through an O_PATH fd: a directory with no permission bits cannot be opened to
    read, and chmod by name would follow a symlink put there meanwhile."""
    fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


def remove_tree_at(name: str, dir_fd: int) -> None:
    """Removes the entry `name` of dir_fd whatever it is, never following a symlink; a tree is
    removed also through directories a task left read-only (they are opened up to their
    owner first). What cannot be removed stays, silently, as with rmtree(ignore_errors=True)."""
    existing = lstat_at(name, dir_fd)
    if existing is None:
        return
    if not stat.S_ISDIR(existing.st_mode):
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass
        return
    # fd-based, at any depth (shutil.rmtree recurses per level: RecursionError below ~1,000),
    # opening up what the task closed as it goes down.
    remove_tree(name, dir_fd)


def _mkdir_if_missing(name: str, dir_fd: int) -> None:
    try:
        os.mkdir(name, 0o755, dir_fd=dir_fd)
    except FileExistsError:
        pass
