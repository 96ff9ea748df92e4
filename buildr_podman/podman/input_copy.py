"""The inputs of a container whose inputs are "copy", copied by the host into its workspace volume.

Where Podman cannot put the repository under a copy-on-write overlay (a file system it cannot
use as a lower layer), `container { inputs = "copy" }` copies it in instead. The workspace is a
volume of the pod's own (pods.py), a directory of the user's Podman storage: this process copies
straight into it, in a thread of its own while the container starts, so that most of the copy
is done by the time the agent listens. What it writes belongs to the invoking user, which is
root in the rootless container, as if the agent had written it.

The workspace then holds what the overlay would show: every mapped directory but the out dir
(outputs are no inputs: pods.hidden_out_dir), with the modes (permission bits only) and
nanosecond mtimes of the originals. Symlinks are copied as links, never followed;
sockets, FIFOs and devices are left out, as they are from what tasks return.

The out dir holds what other tasks returned, and another task of the run may replace its own
output while this copy walks it: both sides are walked through directory fds (never a path
string below a root), and a directory is entered only if it is still the one listed, so a
symlink swapped in can never carry a read or a write out of the repository or the workspace.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from buildr_podman.archive.beneath import DIRECTORY_FLAGS, open_directory_beneath, same_directory
from buildr_podman.archive.owned import DISK_FULL, PERMISSION_BITS, process_umask, write_all
from buildr_podman.errors import BackendError
from buildr_podman.model import Task
from buildr_podman.podman.input_mapping import MappedDirectories

if TYPE_CHECKING:
    from buildr_podman.phases import Phase, Phases

__all__ = ["CopyStats", "InputCopy", "copy_inputs"]

NO_COPY_FILE_RANGE = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)
READ_SIZE = 1 << 20
#: What an entry may have become since its directory was listed, when another task of the run
#: replaces its out dir meanwhile: gone, or a symlink or file where a directory was.
VANISHED = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR)


@dataclass
class CopyStats:
    files: int = 0
    bytes: int = 0
    names: list[str] = field(default_factory=list)  #: what was copied, for tests; when asked


def copy_inputs(directories: MappedDirectories, workspace: Path,
                stop: threading.Event | None = None, root: Path | None = None, *,
                keep_names: bool = False, skip: Path | None = None,
                progress: Phase | None = None) -> CopyStats:
    """Copies the inputs into the (new, empty) workspace directory; stops early, leaving
    a partial copy, once `stop` is set. Each mapped source is reached from `root` (the
    repository) without following a symlink; without a root, as given. An entry deleted or
    replaced since its directory was listed is left out (an out dir that another task of the
    run is replacing, say); any other failure raises its OSError, naming the host path.
    Nothing of the directory `skip` (the out dir) is copied. `progress` counts each file and
    symlink, and the bytes."""
    copier = _Copier(stop, keep_names, _identity(skip), progress)
    workspace_fd = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for source, target in directories:
            if copier.stopped():
                break
            copier.copy_mapping(_open_source(source, root), source, workspace_fd, target)
    finally:
        os.close(workspace_fd)
    return copier.stats


def _identity(directory: Path | None) -> tuple[int, int] | None:
    """(device, inode) of a directory, to know it when the walk meets it; None if none."""
    try:
        st = os.stat(directory) if directory is not None else None
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st is not None else None


def _open_source(source: Path, root: Path | None) -> int:
    if root is None:
        return os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    resolved = root.resolve()
    try:
        return open_directory_beneath(resolved, source.relative_to(resolved).parts,
                                      create=False)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(source)) from exc


@dataclass
class _Level:
    """A directory being copied: its source and target fds, the entries left to copy."""

    source_fd: int
    target_fd: int
    entries: Iterator[tuple[str, os.stat_result]]
    where: str  #: its host path, for messages
    name: str  #: its workspace name
    st: os.stat_result | None  #: its source stat; None for a mapping's parents


class _Copier:
    """Copies trees from directory fds to directory fds: every source entry is opened relative
    to the directory it was listed in, with O_NOFOLLOW, and a directory is entered only if it
    is the one that was listed (same device and inode); every target entry is created relative
    to the workspace directory made for it. No path string is resolved below a root, so a
    symlink swapped in on either side can never redirect a read or a write."""

    def __init__(self, stop: threading.Event | None, keep_names: bool,
                 skip: tuple[int, int] | None = None, progress: Phase | None = None) -> None:
        self._stop = stop
        self._progress = progress
        self._skip = skip
        self._umask = process_umask()
        self._keep_names = keep_names
        self.stats = CopyStats()

    def stopped(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def copy_mapping(self, source_fd: int, source: Path, workspace_fd: int, target: str) -> None:
        """Copies the tree at source_fd (which this takes over) to `target` in the workspace:
        the workspace itself for "", else a directory made for it, below plain directories
        for the target's parents ("a/b")."""
        parts = target.split("/") if target else []
        try:
            parent_fd = open_directory_beneath(workspace_fd, parts[:-1], create=True)
        except OSError:
            os.close(source_fd)
            raise
        try:
            if parts:
                os.mkdir(parts[-1], 0o700, dir_fd=parent_fd)  # writable until its contents are in
                target_fd = os.open(parts[-1], DIRECTORY_FLAGS, dir_fd=parent_fd)
                self._named(target)
            else:
                target_fd = os.dup(parent_fd)
        except OSError:
            os.close(source_fd)
            raise
        finally:
            os.close(parent_fd)
        st = os.fstat(source_fd) if parts else None
        self._copy_tree(_Level(source_fd, target_fd, iter(()), str(source), target, st))

    def _copy_tree(self, top: _Level) -> None:
        """Depth first with a stack of open levels (no recursion: a returned tree may be
        thousands of levels deep); a directory gets its mode and time once its contents are
        in, so a read-only one still receives them."""
        stack = [top]
        try:
            top.entries = self._listing(top)
            while stack:
                if self.stopped():
                    return
                level = stack[-1]
                entry = next(level.entries, None)
                if entry is None:
                    self._finish(stack.pop())
                    continue
                name, listed = entry
                child = f"{level.name}/{name}" if level.name else name
                try:
                    if stat.S_ISDIR(listed.st_mode):
                        if (listed.st_dev, listed.st_ino) == self._skip:
                            continue  # the out dir
                        entered = self._enter(level, name, listed, child)
                        if entered is not None:
                            stack.append(entered)
                            entered.entries = self._listing(entered)
                    elif stat.S_ISLNK(listed.st_mode):
                        self._copy_symlink(level, name, listed)
                        self._named(child)
                    elif stat.S_ISREG(listed.st_mode):
                        self._copy_file(level, name)
                        self._named(child)
                except _Vanished:
                    continue
                except OSError as exc:
                    raise OSError(exc.errno, exc.strerror, f"{level.where}/{name}") from exc
        finally:
            for level in stack:
                os.close(level.source_fd)
                os.close(level.target_fd)

    def _listing(self, level: _Level) -> Iterator[tuple[str, os.stat_result]]:
        """The directory's entries with their own stats (symlinks not followed), by name."""
        try:
            with os.scandir(level.source_fd) as entries:
                listed = []
                for entry in entries:
                    try:
                        listed.append((entry.name, entry.stat(follow_symlinks=False)))
                    except FileNotFoundError:
                        continue  # deleted since the listing
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, level.where) from exc
        return iter(sorted(listed))

    def _enter(self, level: _Level, name: str, listed: os.stat_result,
               child: str) -> _Level | None:
        """The level of the subdirectory `name`, its target made; None if it is no longer
        the directory that was listed."""
        try:
            source_fd = os.open(name, DIRECTORY_FLAGS | os.O_NONBLOCK, dir_fd=level.source_fd)
        except OSError as exc:
            if exc.errno in VANISHED:
                return None
            raise
        try:
            if not same_directory(source_fd, listed):
                os.close(source_fd)
                return None
            _make_directory(name, level.target_fd)
            target_fd = os.open(name, DIRECTORY_FLAGS, dir_fd=level.target_fd)
        except BaseException:
            os.close(source_fd)
            raise
        self._named(child)
        return _Level(source_fd, target_fd, iter(()), f"{level.where}/{name}", child, listed)

    def _finish(self, level: _Level) -> None:
        try:
            if level.st is not None:
                os.fchmod(level.target_fd, level.st.st_mode & PERMISSION_BITS)
                os.utime(level.target_fd, ns=(level.st.st_mtime_ns, level.st.st_mtime_ns))
        finally:
            os.close(level.source_fd)
            os.close(level.target_fd)

    def _named(self, name: str) -> None:
        if self._keep_names:
            self.stats.names.append(name)

    def _copy_symlink(self, level: _Level, name: str, st: os.stat_result) -> None:
        try:
            link = os.readlink(name, dir_fd=level.source_fd)
        except OSError as exc:
            if exc.errno in (*VANISHED, errno.EINVAL):  # EINVAL: no longer a symlink
                raise _Vanished from None
            raise
        os.symlink(link, name, dir_fd=level.target_fd)
        os.utime(name, ns=(st.st_mtime_ns, st.st_mtime_ns), dir_fd=level.target_fd,
                 follow_symlinks=False)
        if self._progress is not None:
            self._progress.advance()

    def _copy_file(self, level: _Level, name: str) -> None:
        """The bytes, the mode and the exact mtime (atime as mtime) of the file as opened."""
        try:
            # O_NONBLOCK: a FIFO put in the file's place since the listing must not hang the
            # copy (opening one blocks until a writer comes). Nothing changes for a file.
            src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                          dir_fd=level.source_fd)
        except OSError as exc:
            if exc.errno in VANISHED:
                raise _Vanished from None
            raise
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                raise _Vanished  # replaced by something else since the listing
            mode = st.st_mode & PERMISSION_BITS
            dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode,
                          dir_fd=level.target_fd)
            try:
                size = _copy_bytes(src, dst, st.st_size)
                if self._umask is None or mode & self._umask:  # the umask took bits: undo it
                    os.fchmod(dst, mode)
                os.utime(dst, ns=(st.st_mtime_ns, st.st_mtime_ns))
            finally:
                os.close(dst)
        finally:
            os.close(src)
        self.stats.files += 1
        self.stats.bytes += size
        if self._progress is not None:
            self._progress.advance(1, size)


def _make_directory(name: str, parent_fd: int) -> None:
    """Writable until its contents are in (its mode comes last). It may be there already: the
    container's start makes the mount point over the out dir, and its parents, while the copy
    runs; the open that follows (O_NOFOLLOW) refuses anything but a directory."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        pass


class _Vanished(Exception):
    """The source entry was deleted or replaced after its directory was listed."""


def _copy_bytes(src: int, dst: int, size: int) -> int:
    """In the kernel (copy_file_range: the bytes never pass through this process, and a file
    system that can shares them), or read and written where it refuses (two file systems).
    Returns the bytes copied."""
    left = size
    try:
        while left > 0 and (copied := os.copy_file_range(src, dst, left)):
            left -= copied
        return size - left
    except OSError as exc:
        if exc.errno not in NO_COPY_FILE_RANGE:
            raise
    while left > 0 and (chunk := os.read(src, min(left, READ_SIZE))):
        write_all(dst, chunk)
        left -= len(chunk)
    return size - left


class InputCopy:
    """copy_inputs in a thread, started at once: the copy overlaps the container's start."""

    def __init__(self, task: Task, directories: MappedDirectories, workspace: Path,
                 root: Path | None = None, skip: Path | None = None,
                 phases: Phases | None = None) -> None:
        self._task = task
        # Begun here, not in the thread: its duration is the one the task waits through.
        self._phase = phases.start("copy_inputs", "copying inputs in", unit="files") \
            if phases is not None else None
        #: what the agent checks the mounted workspace against (RunSpec.workspace_inode); the
        #: copy never creates the workspace: a missing one fails the copy, naming it
        self.workspace_inode = _inode(workspace)
        self._stop = threading.Event()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run,
                                        args=(directories, workspace, root, skip),
                                        name=f"copy-inputs-{task.name}", daemon=True)
        self._thread.start()

    def _run(self, directories: MappedDirectories, workspace: Path, root: Path | None,
             skip: Path | None) -> None:
        try:
            copy_inputs(directories, workspace, self._stop, root, skip=skip,
                        progress=self._phase)
        except Exception as exc:  # noqa: BLE001 - handed to finish(), in the caller's thread
            self._error = exc
        finally:
            if self._phase is not None:
                self._phase.finish()

    def wait(self, timeout: float) -> bool:
        """Whether the copy has ended, waiting up to `timeout` seconds for it."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def poll(self) -> None:
        """Reports the copy if it is due (its own thread counts files; a big one takes a
        while): for the thread that waits for it."""
        if self._phase is not None:
            self._phase.poll()

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


def _inode(directory: Path) -> int:
    try:
        return os.stat(directory).st_ino
    except OSError:
        return 0


def _copy_error(task: Task, exc: OSError) -> BackendError:
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno in DISK_FULL:
        return BackendError(f"no space left for the inputs of task {task.name!r} in Podman's "
                            f"storage ({exc.strerror}{where}): free some space there, or use "
                            'inputs = "mount"')
    return BackendError(f"cannot copy the inputs of task {task.name!r} into its container "
                        f"({exc.strerror}{where}): make them readable, or use inputs = "
                        '"mount"')
