"""Lays the outputs of other modules (`inputs_from`) over a workspace, each over the ones before.

The host mounts each module's output read-only in the container; before a pod's first task the
agent copies them into the workspace in the order given, so that a later one wins where two
hold the same path. snapshot.Baseline reads the same layers as the "before" of every task, so
a laid file comes back only when the task changes it, and agent/revert.py puts it back from
its layer between tasks. Which outputs a pod holds never changes: the host starts another pod
for a task that needs other ones (podman/warm_pods.container_key).
"""

from __future__ import annotations

import os
import stat

from buildr_podman.agent import long_paths
from buildr_podman.archive.owned import remove_tree_or_fail

__all__ = ["lay_outputs"]


def lay_outputs(workspace: str, layers: list[str]) -> int:
    """Copies every layer's tree into the workspace, the first layer first; returns how many
    paths were laid. A file or symlink replaces whatever the workspace held at its path; a
    directory merges with one that is there and takes the layer's mode. A stack, not a
    recursion, and every path through long_paths: any depth, any length."""
    laid = 0
    for layer in layers:
        modes: list[tuple[str, int]] = []  # directories, given their mode once filled
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            subdirectories = []
            for entry in sorted(long_paths.scan(f"{layer}/{rel_dir}" if rel_dir else layer),
                                key=lambda entry: entry.name):
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                source, target = f"{layer}/{rel}", f"{workspace}/{rel}"
                if entry.is_dir(follow_symlinks=False):
                    _make_directory(target)
                    modes.append((target, stat.S_IMODE(long_paths.lstat(source).st_mode)))
                    subdirectories.append(rel)
                else:
                    _copy_entry(source, target)  # a symlink to a directory too, as a link
                laid += 1
            stack.extend(reversed(subdirectories))  # walked in name order
        for target, mode in reversed(modes):  # deepest first: after writing into them
            long_paths.chmod(target, mode)
    return laid


def _make_directory(target: str) -> None:
    if long_paths.is_directory(target):
        return  # merged: its entries stay unless the layer has the same names
    _remove(target)
    long_paths.retry_long(os.mkdir, target, 0o700)


def _copy_entry(source: str, target: str) -> None:
    _remove(target)
    long_paths.copy_entry(source, target)


def _remove(path: str) -> None:
    long_paths.retry_long(remove_tree_or_fail, path)
