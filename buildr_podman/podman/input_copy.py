"""The inputs of a container whose inputs are "copy", copied by the host into its workspace volume.

Where Podman cannot put the repository under a copy-on-write overlay (a file system it cannot
use as a lower layer), `container { inputs = "copy" }` copies it in instead. The workspace is a
volume of the pod's own (pods.py), a directory of the user's Podman storage: this process copies
straight into it, in a thread of its own while the container starts, so that most of the copy
is done by the time the agent listens. What it writes belongs to the invoking user, which is
root in the rootless container, as if the agent had written it.

The workspace then holds what the overlay would show: every mapped directory, the out dir
included (later tasks read their dependencies' outputs through it), with the modes (permission
bits only) and nanosecond mtimes of the originals. Symlinks are copied as links, never followed;
sockets, FIFOs and devices are left out, as they are from what tasks return.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from buildr_podman.archive.owned import DISK_FULL, PERMISSION_BITS, process_umask, write_all
from buildr_podman.errors import BackendError
from buildr_podman.model import Task
from buildr_podman.podman.input_mapping import MappedDirectories

__all__ = ["InputCopy", "copy_inputs", "input_entries"]

NO_COPY_FILE_RANGE = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)
READ_SIZE = 1 << 20


def input_entries(directories: MappedDirectories) -> Iterator[tuple[str, str]]:
    """(host path, name in the workspace) of every directory, file and symlink of the inputs,
    each directory before what it holds. Symlinks are copied as links, never followed."""
    for source, target in directories:
        prefix = target + "/" if target else ""
        if target:
            yield str(source), target
        for directory, subdirectories, files in os.walk(source, onerror=_unlistable):
            subdirectories.sort()
            rel = os.path.relpath(directory, source)
            base = prefix if rel == "." else f"{prefix}{rel}/"
            for name in (*subdirectories, *sorted(files)):
                yield os.path.join(directory, name), base + name


def _unlistable(error: OSError) -> None:
    """os.walk's onerror: a directory that cannot be listed fails the copy with its name, as an
    unreadable file does, instead of being left out silently. One deleted since its parent
    was listed is simply gone."""
    if not isinstance(error, FileNotFoundError):
        raise error


@dataclass
class CopyStats:
    files: int = 0
    bytes: int = 0


def copy_inputs(directories: MappedDirectories, workspace: Path,
                stop: threading.Event | None = None) -> CopyStats:
    """Copies the inputs into the (new, empty) workspace directory; stops early, leaving
    a partial copy, once `stop` is set. An entry deleted since the walk saw it is left out (an
    out dir that another task of the run is replacing, say); any other failure raises its
    OSError."""
    stats = CopyStats()
    umask = process_umask()
    made: list[tuple[str, os.stat_result]] = []  # directories, to finish last
    for source, name in input_entries(directories):
        if stop is not None and stop.is_set():
            return stats
        target = os.path.join(workspace, name)
        try:
            st = _lstat(source)
            if stat.S_ISDIR(st.st_mode):
                _make_directory(target)
                made.append((target, st))
            elif stat.S_ISLNK(st.st_mode):
                _copy_symlink(source, target, st)
            elif stat.S_ISREG(st.st_mode):
                _copy_file(source, target, st, umask)
                stats.files += 1
                stats.bytes += st.st_size
        except _Vanished:
            continue
    # Deepest first: setting a directory's mode or time after writing into it, never before.
    for target, st in reversed(made):
        os.chmod(target, st.st_mode & PERMISSION_BITS)
        os.utime(target, ns=(st.st_mtime_ns, st.st_mtime_ns))
    return stats


def _make_directory(target: str) -> None:
    """Writable until its contents are in (its own mode comes last). A mapping's target may lie
    below directories no entry names ("a/b"): those are made as plain directories."""
    try:
        os.mkdir(target, 0o700)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(target))
        os.mkdir(target, 0o700)


class _Vanished(Exception):
    """The source entry was deleted after the walk saw it."""


def _lstat(source: str) -> os.stat_result:
    try:
        return os.lstat(source)
    except FileNotFoundError:
        raise _Vanished from None


def _copy_symlink(source: str, target: str, st: os.stat_result) -> None:
    try:
        link = os.readlink(source)
    except FileNotFoundError:
        raise _Vanished from None
    os.symlink(link, target)
    os.utime(target, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_file(source: str, target: str, st: os.stat_result, umask: int | None) -> None:
    """The bytes, the mode and the exact mtime (atime as mtime)."""
    try:
        # O_NONBLOCK: a FIFO put in the file's place since the lstat must not hang the copy
        # (opening one blocks until a writer comes). It changes nothing for a regular file.
        src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise _Vanished from None
    try:
        mode = st.st_mode & PERMISSION_BITS
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            _copy_bytes(src, dst, st.st_size)
            if umask is None or mode & umask:  # created through the umask: undo what it took
                os.fchmod(dst, mode)
            os.utime(dst, ns=(st.st_mtime_ns, st.st_mtime_ns))
        except _Vanished:
            os.unlink(target)
            raise
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_bytes(src: int, dst: int, size: int) -> None:
    """In the kernel (copy_file_range: the bytes never pass through this process, and a file
    system that can shares them), or read and written where it refuses (two file systems)."""
    left = size
    try:
        while left > 0 and (copied := os.copy_file_range(src, dst, left)):
            left -= copied
        return
    except OSError as exc:
        if exc.errno not in NO_COPY_FILE_RANGE:
            raise
    # copy_file_range also refuses what is no longer a regular file (replaced since the lstat):
    # left out, as an entry deleted meanwhile is. Checked only here, off the usual path.
    if not stat.S_ISREG(os.fstat(src).st_mode):
        raise _Vanished
    while left > 0 and (chunk := os.read(src, min(left, READ_SIZE))):
        write_all(dst, chunk)
        left -= len(chunk)


class InputCopy:
    """copy_inputs in a thread, started at once: the copy overlaps the container's start."""

    def __init__(self, task: Task, directories: MappedDirectories, workspace: Path) -> None:
        self._task = task
        self._stop = threading.Event()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, args=(directories, workspace),
                                        name=f"copy-inputs-{task.name}", daemon=True)
        self._thread.start()

    def _run(self, directories: MappedDirectories, workspace: Path) -> None:
        try:
            copy_inputs(directories, workspace, self._stop)
        except Exception as exc:  # noqa: BLE001 - handed to finish(), in the caller's thread
            self._error = exc

    def wait(self, timeout: float) -> bool:
        """Whether the copy has ended, waiting up to `timeout` seconds for it."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def finish(self) -> None:
        """Waits for the copy; raises a one-line BackendError if it failed."""
        self._thread.join()
        if isinstance(self._error, OSError):
            raise _copy_error(self._task, self._error) from self._error
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stops the copy and waits for it (the workspace is about to be removed)."""
        self._stop.set()
        self._thread.join()


def _copy_error(task: Task, exc: OSError) -> BackendError:
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno in DISK_FULL:
        return BackendError(f"no space left for the inputs of task {task.name!r} in Podman's "
                            f"storage ({exc.strerror}{where}): free some space there, or use "
                            'inputs = "mount"')
    return BackendError(f"cannot copy the inputs of task {task.name!r} into its container "
                        f"({exc.strerror}{where}): make them readable, or use inputs = "
                        '"mount"')
