"""Puts a workspace back as the baseline holds it, undoing exactly one task's change set.

A warm container runs many tasks; each must start from a clean workspace. The change set is
exact, so undoing it costs time proportional to what the task changed, not to the repository.
Every path goes through long_paths: one past PATH_MAX is undone like any other.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from buildr_podman.agent import long_paths
from buildr_podman.agent.access import ACCESS
from buildr_podman.agent.snapshot import Baseline
from buildr_podman.agent.watcher import ChangeSet
from buildr_podman.archive.owned import remove_tree_or_fail

__all__ = ["revert"]


def revert(workspace: str, baseline: Baseline, changes: ChangeSet) -> None:
    """Removes what the task made or changed, then copies back what the baseline holds (its
    layers merged: the inputs, and the outputs laid over them)."""
    touched = set(changes.returned) | set(changes.deleted)
    for rel in sorted(changes.returned, key=_depth, reverse=True):
        path = os.path.join(workspace, rel)
        before = baseline.get(rel)
        if _is_directory(path) and before is not None and before.is_dir:
            continue  # there before and now: its contents are undone one by one, its mode below
        _remove(path)
    for rel in sorted(_new_directories(baseline, changes.returned), key=_depth, reverse=True):
        _remove_empty_directory(os.path.join(workspace, rel))
    for rel in sorted(touched, key=_depth):
        _restore(baseline, rel, os.path.join(workspace, rel))


def _is_directory(path: str) -> bool:
    return long_paths.is_directory(path)


def _depth(rel: str) -> int:
    return rel.count("/")


def _new_directories(baseline: Baseline, returned: Iterable[str]) -> set[str]:
    """Ancestors of returned paths that the baseline does not have: the task made them."""
    new = set()
    for rel in returned:
        parts = rel.split("/")[:-1]
        for i in range(len(parts), 0, -1):
            ancestor = "/".join(parts[:i])
            if ancestor in new or baseline.get(ancestor) is not None:
                break
            new.add(ancestor)
    return new


def _remove(path: str) -> None:
    # At any depth, and through directories the task closed (mode 000: without
    # CAP_DAC_OVERRIDE even their owner, the agent, must open them up first), above the path
    # as below it.
    try:
        long_paths.retry_long(remove_tree_or_fail, path)
    except PermissionError:
        if not ACCESS.open_path(os.path.dirname(path), for_writing=True):
            raise
        long_paths.retry_long(remove_tree_or_fail, path)


def _remove_empty_directory(path: str) -> None:
    try:
        long_paths.retry_long(os.rmdir, path)
    except OSError:
        pass  # gone already, or it still holds something the task did not change


def _restore(baseline: Baseline, rel: str, target: str) -> None:
    before = baseline.get(rel)
    if before is None:
        return  # the task created it; removing it was the whole undo
    if _exists(target):
        if before.is_dir and _is_directory(target):
            long_paths.chmod(target, stat.S_IMODE(before.mode))  # kept by the task, chmod-ed
        return  # otherwise a parent's restore brought it back already
    long_paths.retry_long(os.makedirs, os.path.dirname(target), exist_ok=True)
    if before.is_dir:
        _restore_tree(baseline, rel, target)
    else:
        _copy(baseline, rel, target)


def _restore_tree(baseline: Baseline, rel_dir: str, target: str) -> None:
    """A directory as the baseline's layers hold it together (one layer's copy would miss what
    the others add to it), modes last, deepest first."""
    long_paths.retry_long(os.mkdir, target, 0o700)
    directories = [(target, baseline.get(rel_dir))]
    for rel in sorted(baseline.under(rel_dir)):  # parents sort before what they hold
        path = os.path.join(target, os.path.relpath(rel, rel_dir))
        entry = baseline.get(rel)
        if entry is not None and entry.is_dir:
            long_paths.retry_long(os.mkdir, path, 0o700)
            directories.append((path, entry))
        elif entry is not None:
            _copy(baseline, rel, path)
    for path, entry in reversed(directories):
        if entry is not None:
            long_paths.chmod(path, stat.S_IMODE(entry.mode))


def _copy(baseline: Baseline, rel: str, target: str) -> None:
    source = baseline.path_of(rel)
    if source is None:
        return
    long_paths.copy_entry(source, target)


def _exists(path: str) -> bool:
    try:
        long_paths.lstat(path)
    except OSError:
        return False  # as os.path.lexists says
    return True
