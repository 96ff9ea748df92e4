"""Reading what the task left whatever its modes, and saying which files could not be read.

The agent runs as the container's root, but `capabilities { drop = ["ALL"] }` takes
CAP_DAC_OVERRIDE from it: a file of mode 000 or 0200, or a directory of mode 000, that the task
left is then closed to the agent like to anyone else. The agent owns what a root task made, and
an owner may always chmod: such a path is opened up for its owner (u+r, and u+x for a
directory) just long enough to be read, and its mode put back once the archive is sent, so the
archive and the workspace keep the task's modes. What the agent does not own (a task with
`user = "UID:GID"`) and cannot read is a problem of that file, named in the task's result, not
a failure of the agent.

One task runs at a time in an agent, so one Access serves the task that runs (`ACCESS`): the
walks, the tracker and the packer reach it without it being handed down through each of them.
"""

from __future__ import annotations

import errno
import os
import stat
import threading

from buildr_podman.agent import long_paths

__all__ = ["ACCESS", "Access"]

OWNER_READ_DIR = stat.S_IRUSR | stat.S_IXUSR
# The fields of a stat_result beyond its ten tuple items (nanosecond times among them).
STAT_EXTRAS = ("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns",
               "st_blksize", "st_blocks")
MAX_NAMED_PROBLEMS = 5  # files named in the result's error; the count says how many more


class Access:
    """The paths of one task opened up for reading, and the ones that stayed closed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the tracker's resolution and the packer share it
        self._root = "/"
        self._opened: dict[str, int] = {}  # path -> the mode to put back, in order opened
        self.problems: list[tuple[str, str]] = []  # (path relative to the root, why)

    def begin(self, root: str) -> None:
        with self._lock:
            self._root = os.path.join(os.path.abspath(root), "")
            self._opened = {}
            self.problems = []

    def open_path(self, path: str, for_writing: bool = False) -> bool:
        """After EACCES on `path`: opens up each directory from the workspace down to it that
        its owner (the agent) cannot search or list (or, for_writing, also change). True when
        something was opened, so that the caller tries again; False when nothing more can be
        done."""
        if not path.startswith(self._root):
            return False
        opened = False
        parts = path[len(self._root):].split("/")
        current = self._root.rstrip("/")
        for part in parts:
            current = f"{current}/{part}"
            opened = self._open_directory(current, for_writing) or opened
        return opened

    def lstat(self, path: str) -> os.stat_result:
        """os.lstat, through directories the task closed, when the agent owns them; a
        directory opened up is given the mode the task left (what the archive must say)."""
        try:
            st = long_paths.lstat(path)
        except PermissionError:
            if not self.open_path(os.path.dirname(path)):
                raise
            st = long_paths.lstat(path)
        mode = self._opened.get(path)
        if mode is None:
            return st
        fields = list(st)
        fields[stat.ST_MODE] = stat.S_IFMT(st.st_mode) | mode
        return os.stat_result(fields, {name: getattr(st, name) for name in STAT_EXTRAS})

    def list_directory(self, path: str) -> list[os.DirEntry[str]]:
        """The entries of a directory, opened up first when it is closed and the agent's."""
        try:
            return long_paths.scan(path)
        except PermissionError:
            if not self.open_path(path):
                raise
            return long_paths.scan(path)

    def open_file(self, path: str) -> int:
        """os.open(path, O_RDONLY); a file the agent owns but may not read is made readable
        for the time of the open (the fd reads on once its mode is back)."""
        try:
            return long_paths.open_fd(path, os.O_RDONLY | os.O_NOFOLLOW)
        except PermissionError:
            if not self.open_path(os.path.dirname(path)):
                st = long_paths.lstat(path)
                if st.st_uid != os.geteuid():
                    raise
                long_paths.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IRUSR)
                try:
                    return long_paths.open_fd(path, os.O_RDONLY | os.O_NOFOLLOW)
                finally:
                    long_paths.chmod(path, stat.S_IMODE(st.st_mode))
            return self.open_file(path)

    def problem(self, path: str, exc: OSError) -> None:
        """A path that cannot be read: it is left out, and the task's result names it."""
        rel = path[len(self._root):] if path.startswith(self._root) else path
        with self._lock:
            self.problems.append((rel, exc.strerror or str(exc)))

    def unknown(self, rel: str) -> bool:
        """Whether rel could not be looked at: it, or a directory above it, is a problem."""
        return any(rel == bad or rel.startswith(bad + "/") for bad, _ in self.problems)

    def problems_error(self) -> str:
        """The error line for the task's result; empty when every path could be read."""
        if not self.problems:
            return ""
        named = ", ".join(f"{rel!r} ({why})" for rel, why in self.problems[:MAX_NAMED_PROBLEMS])
        more = len(self.problems) - MAX_NAMED_PROBLEMS
        return (f"{len(self.problems)} changed path(s) could not be read and did not come back: "
                f"{named}{f' and {more} more' if more > 0 else ''}: let the task leave them "
                "readable by their owner, or keep CAP_DAC_OVERRIDE")

    def restore(self) -> None:
        """Puts back the modes of what was opened up, deepest first."""
        with self._lock:
            opened, self._opened = self._opened, {}
        for path, mode in reversed(opened.items()):
            try:
                long_paths.chmod(path, mode)
            except FileNotFoundError:
                pass

    def _open_directory(self, path: str, for_writing: bool) -> bool:
        try:
            st = long_paths.lstat(path)
        except OSError:
            return False
        mode = stat.S_IMODE(st.st_mode)
        needed = OWNER_READ_DIR | (stat.S_IWUSR if for_writing else 0)
        if (not stat.S_ISDIR(st.st_mode) or mode & needed == needed
                or st.st_uid != os.geteuid()):
            return False
        try:
            long_paths.chmod(path, mode | needed)
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES, errno.EROFS):
                return False
            raise
        with self._lock:
            self._opened[path] = mode
        return True


ACCESS = Access()
