"""A stat snapshot of a directory tree, and the comparison that decides what changed."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["Entry", "Snapshot", "entry_of", "walk"]


@dataclass(frozen=True, slots=True)
class Entry:
    """What is compared to decide whether a path changed (mtime in nanoseconds)."""

    mode: int
    size: int
    mtime_ns: int
    inode: int
    link_target: str | None = None  # symlinks only

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def entry_of(path: str) -> Entry | None:
    """The entry for `path` now, or None when it does not exist."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    return Entry(st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, target)


def walk(root: str, relative: str = "") -> Iterator[tuple[str, Entry]]:
    """Every path under root/relative (not itself), relative to root, depth first."""
    stack = [relative]
    while stack:
        rel_dir = stack.pop()
        try:
            scanner = os.scandir(os.path.join(root, rel_dir) if rel_dir else root)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with scanner:
            for dirent in scanner:
                rel = f"{rel_dir}/{dirent.name}" if rel_dir else dirent.name
                try:
                    st = dirent.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while we looked: a later scan will see it gone
                target = os.readlink(dirent.path) if stat.S_ISLNK(st.st_mode) else None
                yield rel, Entry(st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, target)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(rel)


class Snapshot:
    """The tree as it was before the task, keyed by path relative to the workspace."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        self.entries = entries

    @classmethod
    def take(cls, root: str) -> Snapshot:
        return cls(dict(walk(root)))

    def get(self, rel: str) -> Entry | None:
        return self.entries.get(rel)

    def under(self, rel_dir: str) -> Iterator[str]:
        """Paths that were below rel_dir ("" is the whole tree)."""
        if not rel_dir:
            yield from self.entries
            return
        prefix = rel_dir + "/"
        yield from (path for path in self.entries if path.startswith(prefix))


def changed(before: Entry | None, after: Entry, same_content: Callable[[], bool] | None = None
            ) -> bool:
    """Whether `after` is new or differs in content, mode or link target from `before`.

    A write always moves mtime, so equal size + mtime_ns + inode mean the content is the same
    without reading it. When only those moved, `same_content` (a comparison with the untouched
    original, where there is one) decides: a file rewritten with the same bytes did not change.
    """
    if before is None or stat.S_IFMT(before.mode) != stat.S_IFMT(after.mode):
        return True
    if before.mode != after.mode:
        return True
    if stat.S_ISDIR(after.mode):
        return False
    if stat.S_ISLNK(after.mode):
        return before.link_target != after.link_target
    if before.size != after.size:
        return True
    if (before.mtime_ns, before.inode) == (after.mtime_ns, after.inode):
        return False
    return same_content is None or not same_content()
