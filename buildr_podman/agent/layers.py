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
import shutil
import stat

from buildr_podman.archive.owned import remove_tree_or_fail, walk_tree

__all__ = ["lay_outputs"]


def lay_outputs(workspace: str, layers: list[str]) -> int:
    """Copies every layer's tree into the workspace, the first layer first; returns how many
    paths were laid. A file or symlink replaces whatever the workspace held at its path; a
    directory merges with one that is there and takes the layer's mode."""
    laid = 0
    for layer in layers:
        modes: list[tuple[str, int]] = []  # directories, given their mode once filled
        for directory, subdirectories, files in walk_tree(layer):
            subdirectories.sort()
            rel_dir = os.path.relpath(directory, layer)
            target_dir = workspace if rel_dir == "." else os.path.join(workspace, rel_dir)
            for name in subdirectories:
                source, target = os.path.join(directory, name), os.path.join(target_dir, name)
                if os.path.islink(source):
                    _copy_entry(source, target)  # walk_tree lists a link to a directory here
                else:
                    _make_directory(target)
                    modes.append((target, stat.S_IMODE(os.lstat(source).st_mode)))
                laid += 1
            for name in sorted(files):
                _copy_entry(os.path.join(directory, name), os.path.join(target_dir, name))
                laid += 1
        for target, mode in reversed(modes):  # deepest first: after writing into them
            os.chmod(target, mode)
    return laid


def _make_directory(target: str) -> None:
    if os.path.isdir(target) and not os.path.islink(target):
        return  # merged: its entries stay unless the layer has the same names
    _remove(target)
    os.mkdir(target, 0o700)


def _copy_entry(source: str, target: str) -> None:
    """A file with its bytes, mode and exact mtime, or a symlink as a link."""
    _remove(target)
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
    else:
        shutil.copy2(source, target, follow_symlinks=False)


def _remove(path: str) -> None:
    remove_tree_or_fail(path)
