"""What the workspace was before the task, and the comparison that decides what changed.

Two sources of "before": a Baseline, a read-only view of the original inputs mounted beside
the workspace (free to set up: nothing is read until a path is asked about), and a Snapshot,
the stat of every path taken before the task (used when there is no baseline).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from buildr_podman.agent import long_paths
from buildr_podman.agent.access import ACCESS

__all__ = ["Baseline", "BeforeState", "Entry", "Snapshot", "changed", "entry_of", "walk",
           "walk_directories", "walk_kinds"]

UNKNOWN_INODE = -1


@dataclass(frozen=True, slots=True)
class Entry:
    """What is compared to decide whether a path changed (mtime in nanoseconds)."""

    mode: int
    size: int
    mtime_ns: int
    inode: int = UNKNOWN_INODE
    link_target: str | None = None  # symlinks only

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


class BeforeState(Protocol):
    def get(self, rel: str) -> Entry | None:
        """The path as it was before the task, or None when it did not exist."""

    def under(self, rel_dir: str) -> Iterator[str]:
        """Paths that were below rel_dir ("" is the whole tree)."""

    def same_content(self, rel: str, current_path: str) -> bool:
        """Whether the file at current_path holds the bytes rel held before (False if unknown)."""


def entry_of(path: str, with_inode: bool = True) -> Entry | None:
    """The entry for `path` now, or None when it does not exist. PermissionError when a
    directory above it stays closed to the agent (see access.py)."""
    try:
        st = ACCESS.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    target = long_paths.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    return Entry(st.st_mode, st.st_size, st.st_mtime_ns,
                 st.st_ino if with_inode else UNKNOWN_INODE, target)


def walk(root: str, relative: str = "") -> Iterator[tuple[str, Entry]]:
    """Every path under root/relative (not itself), relative to root, with its entry."""
    for rel_dir, dirents in _scan_tree(root, relative):
        for dirent in dirents:
            rel = f"{rel_dir}/{dirent.name}" if rel_dir else dirent.name
            path = f"{root}/{rel}"  # not dirent.path: see long_paths.scan
            try:
                st = ACCESS.lstat(path)
            except FileNotFoundError:
                continue  # removed while we looked: a later scan sees it gone
            except PermissionError as exc:
                ACCESS.problem(path, exc)
                continue
            target = long_paths.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            yield rel, Entry(st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, target)


def walk_kinds(root: str, relative: str) -> Iterator[tuple[str, int]]:
    """Every path under root/relative (not itself) of a tree that is new as a whole, with its
    file type bits alone (see `_kind`: from the directory's d_type, no stat call), which is
    all that decides whether a new path comes back.

    In archive order: each directory's entries by name, a subdirectory's own right after it.
    And lazily: a directory is listed when the walk reaches it, so that the packer sends the
    first paths while the rest is still being listed. Listing 20,000 new files whole before
    the first one was packed kept the host idle for ~70-100 ms at the end of every such task."""
    if relative and not _real_directory(root, relative):
        return
    top = _listing(root, relative)
    levels = [(relative, iter(sorted(top, key=_name)))] if top is not None else []
    while levels:
        rel_dir, dirents = levels[-1]
        dirent = next(dirents, None)
        if dirent is None:
            levels.pop()
            continue
        rel = f"{rel_dir}/{dirent.name}" if rel_dir else dirent.name
        kind = _kind(dirent)
        yield rel, kind
        if kind == stat.S_IFDIR:
            below = _listing(root, rel)
            if below is not None:
                levels.append((rel, iter(sorted(below, key=_name))))


def _name(dirent: os.DirEntry[str]) -> str:
    return dirent.name


def _kind(dirent: os.DirEntry[str]) -> int:
    """The file type bits of an entry: regular, symlink, directory, or 0 for anything else."""
    try:
        if dirent.is_symlink():
            return stat.S_IFLNK
        if dirent.is_file(follow_symlinks=False):
            return stat.S_IFREG
        if dirent.is_dir(follow_symlinks=False):
            return stat.S_IFDIR
    except OSError:
        pass  # removed while we looked (only where d_type is unknown): never returned
    return 0


def walk_directories(root: str) -> Iterator[str]:
    """Every directory under root, relative to it, without a stat call (d_type suffices)."""
    for rel_dir, dirents in _scan_tree(root, ""):
        for dirent in dirents:
            if dirent.is_dir(follow_symlinks=False):
                yield f"{rel_dir}/{dirent.name}" if rel_dir else dirent.name


def _scan_tree(root: str, relative: str) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
    """(directory, its entries) for every directory from root/relative down, depth first.

    Nothing when root/relative is no longer a directory reached without a symlink: a task
    may replace a directory with a symlink, even to itself, and the walk must not follow it
    (to ELOOP, or to files outside the workspace named as if inside). Below it, only
    entries that are directories themselves are entered."""
    if relative and not _real_directory(root, relative):
        return
    stack = [relative]
    while stack:
        rel_dir = stack.pop()
        dirents = _listing(root, rel_dir)
        if dirents is None:
            continue
        yield rel_dir, dirents
        for dirent in dirents:
            if dirent.is_dir(follow_symlinks=False):
                stack.append(f"{rel_dir}/{dirent.name}" if rel_dir else dirent.name)


def _listing(root: str, rel_dir: str) -> list[os.DirEntry[str]] | None:
    """The entries of root/rel_dir; None when it cannot be listed (gone, or closed to the
    agent: a problem named in the task's result, and below it nothing is known)."""
    path = os.path.join(root, rel_dir) if rel_dir else root
    try:
        return ACCESS.list_directory(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError as exc:
        ACCESS.problem(path, exc)
        return None


def _real_directory(root: str, relative: str) -> bool:
    """Whether root/relative and each directory on the way there below root is a directory,
    never a symlink (lstat by lstat: realpath gives up silently past PATH_MAX)."""
    path = root
    for part in relative.split("/"):
        path = f"{path}/{part}"
        if not long_paths.is_directory(path):
            return False
    return True


class Snapshot:
    """The stat of every path, taken before the task."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        self.entries = entries

    @classmethod
    def take(cls, root: str) -> Snapshot:
        return cls(dict(walk(root)))

    def get(self, rel: str) -> Entry | None:
        return self.entries.get(rel)

    def under(self, rel_dir: str) -> Iterator[str]:
        if not rel_dir:
            yield from self.entries
            return
        prefix = rel_dir + "/"
        yield from (path for path in self.entries if path.startswith(prefix))

    def same_content(self, rel: str, current_path: str) -> bool:
        return False  # contents were not kept: any write counts as a change


class Baseline:
    """The original inputs, read-only, looked at only for the paths that matter.

    `roots` are layers, the lowest first: the repository's inputs, then the outputs of the
    modules named in `inputs_from`, each laid over the ones before (agent/layers.py lays them
    into the workspace). A path is what the highest layer that has it holds, as in an overlay:
    a directory merges with the directories below it; a file or symlink hides whatever lower
    layers have there, and everything they have below that path.
    """

    def __init__(self, roots: str | list[str]) -> None:
        self.roots = [roots] if isinstance(roots, str) else list(roots)
        # per layer: directory -> True (a real directory), False (something else), None (absent)
        self._dirs: list[dict[str, bool | None]] = [{"": True} for _ in self.roots]

    @property
    def root(self) -> str:
        """The lowest layer: the inputs themselves."""
        return self.roots[0]

    def get(self, rel: str) -> Entry | None:
        found = self._find(rel)
        return found[1] if found else None

    def path_of(self, rel: str) -> str | None:
        """Where the path's current content lies in its layer, or None when no layer has it."""
        found = self._find(rel)
        return os.path.join(self.roots[found[0]], rel) if found else None

    def _find(self, rel: str) -> tuple[int, Entry] | None:
        """(layer, entry) of the highest layer that holds rel, unless a higher one hides it."""
        parent = os.path.dirname(rel)
        for layer in range(len(self.roots) - 1, -1, -1):
            state = self._parent_state(layer, parent)
            if state is False:
                return None  # a file or symlink of this layer hides every lower path below it
            if state is None:
                continue  # not in this layer: a lower one may have it
            # Inodes differ between the baseline and the workspace's copy-on-write layer.
            entry = _baseline_entry(os.path.join(self.roots[layer], rel))
            if entry is not None:
                return layer, entry
        return None

    def _parent_state(self, layer: int, rel_dir: str) -> bool | None:
        """True when rel_dir and each of its ancestors is a directory in this layer, False
        when one of them is something else (a symlink is never followed: looking below it
        would leave the tree), None when one is missing (memoised: lookups come grouped by
        directory)."""
        known = self._dirs[layer]
        unknown = []  # rel_dir and its ancestors not looked at yet, deepest first
        while rel_dir not in known:
            unknown.append(rel_dir)
            rel_dir = os.path.dirname(rel_dir)
        state = known[rel_dir]
        for rel_dir in reversed(unknown):  # parents first; a loop, whatever the depth
            if state:
                entry = _baseline_entry(os.path.join(self.roots[layer], rel_dir))
                state = None if entry is None else entry.is_dir
            known[rel_dir] = state
        return state

    def under(self, rel_dir: str) -> Iterator[str]:
        if len(self.roots) == 1:
            if rel_dir and not self._parent_state(0, rel_dir):
                return  # a symlink (or file) in the baseline has nothing below it
            for rel, _ in walk(self.root, rel_dir):
                yield rel
            return
        seen: set[str] = set()
        for layer, root in enumerate(self.roots):
            if rel_dir and not self._parent_state(layer, rel_dir):
                continue
            for rel, _ in walk(root, rel_dir):
                if rel not in seen:
                    seen.add(rel)
                    if self._find(rel) is not None:  # not hidden by a higher layer's file
                        yield rel

    def same_content(self, rel: str, current_path: str) -> bool:
        original = self.path_of(rel)
        if original is None:
            return False
        try:
            return same_bytes(current_path, original)
        except OSError:
            return False


COMPARE_BLOCK = 1 << 20


def same_bytes(first: str, second: str) -> bool:
    """Whether two files hold the same bytes. Not filecmp.cmp: it caches its answer by both
    files' size and mtime, and a warm container's next task may write other bytes under the
    same size and mtime."""
    with open(long_paths.open_fd(first, os.O_RDONLY), "rb", buffering=0) as a, \
            open(long_paths.open_fd(second, os.O_RDONLY), "rb", buffering=0) as b:
        if os.fstat(a.fileno()).st_size != os.fstat(b.fileno()).st_size:
            return False
        while True:
            block = a.read(COMPARE_BLOCK)
            if block != b.read(COMPARE_BLOCK):
                return False
            if not block:
                return True


def _baseline_entry(path: str) -> Entry | None:
    """The baseline's entry; inodes differ between it and the workspace's copy-on-write layer.
    Below a directory the repository has closed (mode 000), a read-only view the agent cannot
    open up, nothing is known: that is said as the path's problem (access.py)."""
    try:
        return entry_of(path, with_inode=False)
    except PermissionError as exc:
        ACCESS.problem(path, exc)
        return None


def changed(before: Entry | None, after: Entry,
            content_check: Callable[[], bool] | None = None, written: bool = False) -> bool:
    """Whether `after` is new or differs in content, mode or link target from `before`.

    A file the task did not write (no inotify event says so: a rescan) keeps its content when
    size and mtime_ns (and inode, where known) are equal. A file it wrote may hold new bytes
    under its old size and mtime (`touch -r`, `cp -p`), so then, as when only those moved,
    `content_check` (a callable comparing with the original) decides, and without one it
    changed: a file rewritten with the same bytes did not change, any other write did.
    """
    if before is None or before.mode != after.mode:
        return True  # new, or another type, or other permission bits
    if stat.S_ISDIR(after.mode):
        return False
    if stat.S_ISLNK(after.mode):
        return before.link_target != after.link_target
    if before.size != after.size:
        return True
    same_inode = UNKNOWN_INODE in (before.inode, after.inode) or before.inode == after.inode
    if before.mtime_ns == after.mtime_ns and same_inode and not written:
        return False
    return content_check is None or not content_check()
