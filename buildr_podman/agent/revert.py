"""Puts a workspace back as the baseline holds it, undoing exactly one task's change set.

A warm container runs many tasks; each must start from a clean workspace. The change set is
exact, so undoing it costs time proportional to what the task changed, not to the repository.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable

from buildr_podman.agent.watcher import ChangeSet

__all__ = ["revert"]


def revert(workspace: str, baseline: str, changes: ChangeSet) -> None:
    """Removes what the task made or changed, then copies back what the baseline holds."""
    touched = set(changes.returned) | set(changes.deleted)
    for rel in sorted(changes.returned, key=_depth, reverse=True):
        path = os.path.join(workspace, rel)
        if _is_directory(path) and _is_directory(os.path.join(baseline, rel)):
            continue  # there before and now: its contents are undone one by one, its mode below
        _remove(path)
    for rel in sorted(_new_directories(baseline, changes.returned), key=_depth, reverse=True):
        _remove_empty_directory(os.path.join(workspace, rel))
    for rel in sorted(touched, key=_depth):
        _restore(os.path.join(baseline, rel), os.path.join(workspace, rel))


def _is_directory(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _depth(rel: str) -> int:
    return rel.count("/")


def _new_directories(baseline: str, returned: Iterable[str]) -> set[str]:
    """Ancestors of returned paths that the baseline does not have: the task made them."""
    new = set()
    for rel in returned:
        parts = rel.split("/")[:-1]
        for i in range(len(parts), 0, -1):
            ancestor = "/".join(parts[:i])
            if ancestor in new or os.path.lexists(os.path.join(baseline, ancestor)):
                break
            new.add(ancestor)
    return new


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_empty_directory(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass  # gone already, or it still holds something the task did not change


def _restore(source: str, target: str) -> None:
    try:
        st = os.lstat(source)
    except FileNotFoundError:
        return  # the task created it; removing it was the whole undo
    if os.path.lexists(target):
        if stat.S_ISDIR(st.st_mode) and _is_directory(target):
            os.chmod(target, stat.S_IMODE(st.st_mode))  # a directory the task kept, chmod-ed
        return  # otherwise a parent's restore brought it back already
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), target)
    elif stat.S_ISDIR(st.st_mode):
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target, follow_symlinks=False)
