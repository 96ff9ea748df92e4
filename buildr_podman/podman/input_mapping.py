"""The directories a task's inputs come from: its input_mapping, checked against the repository.

Every mapped source must lead to a directory of the repository, symlinks resolved. The overlay,
the baseline mount and the copy all show the directory a path leads to, so a symlink out of the
repository would hand the task files that the configuration never named, and `write_back`,
which never follows a symlink, could not bring its changes back. Checked when the pod starts,
not when the configuration loads: a source may be made by a task that runs first.
"""

from __future__ import annotations

from pathlib import Path

from buildr_podman.errors import BackendError
from buildr_podman.model import Project, Task

__all__ = ["MappedDirectories", "mapped_directories"]

#: (source directory, its place in the workspace: "" for the workspace itself), in mapping order
MappedDirectories = list[tuple[Path, str]]


def mapped_directories(project: Project, task: Task) -> MappedDirectories:
    """Every mapping's source directory and place in the workspace; without input_mapping, the
    whole repository. Raises a one-line BackendError for a source that is missing, not a
    directory, or outside the repository."""
    root = project.root.resolve()
    directories = []
    for source_rel, target_rel in task.input_mapping or (("", ""),):
        source = (project.root / source_rel).resolve()
        _check(project, task, source_rel, source, root)
        target = target_rel.strip("/")
        directories.append((source, "" if target in ("", ".") else target))
    return directories


def _check(project: Project, task: Task, source_rel: str, source: Path, root: Path) -> None:
    where = f"task {task.name!r}" + (f" ({task.source})" if task.source else "")
    named = f'{where}: input_mapping source "{source_rel}"'
    if source != root and root not in source.parents:
        raise BackendError(f"{named} leads out of the repository (to {source}): map a directory "
                           "of the repository, or mount that one with bind_mount")
    out_dir = project.out_dir.resolve()
    if source == out_dir or out_dir in source.parents:
        raise BackendError(f"{named} lies in the out dir ({out_dir}): outputs are no inputs; "
                           'use inputs_from = ["MODULE"] or ${task.MODULE.out_dir} for a '
                           "module's outputs of this run")
    if not source.exists():
        raise BackendError(f"{named} does not exist in {project.root}: create it, fix the "
                           "path, or depend on the task that makes it")
    if not source.is_dir():
        raise BackendError(f"{named} is not a directory: map directories only")
