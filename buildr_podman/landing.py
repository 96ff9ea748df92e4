"""Where a task's outputs land in the out dir: the one component that puts them there.

`<out_dir>/<task>/` holds the last good output: a task that succeeded replaces it whole. A task
that failed or timed out keeps it, and its own files go to `<out_dir>/.failed/<task>/`
instead, to inspect (the summary and the JSON events name that place). A module name starts
with a letter or digit, so `.failed` (like `.logs` and `.reports`) collides with no task.
"""

from __future__ import annotations

import os
from pathlib import Path

from buildr_podman.archive.beneath import is_marked, lstat_at, remove_tree_at
from buildr_podman.archive.extract import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ENTRIES,
    StagedTree,
    stage_tar_stream,
)
from buildr_podman.archive.tarstream import Readable
from buildr_podman.executor import RunObserver
from buildr_podman.model import Project, Task
from buildr_podman.phases import Phases

__all__ = ["OutputLanding"]


class OutputLanding:
    """Stages a task's archive as it arrives, then lands it where its result says."""

    def __init__(self, project: Project) -> None:
        self.project = project

    def stage(self, task: Task, archive: Readable,
              observer: RunObserver | None = None) -> StagedTree:
        """The whole archive, extracted beside the out dir (nothing is replaced yet); a long
        extraction is reported to the observer as phase "extract_outputs" (phases.py)."""
        phase = Phases(observer, task).start("extract_outputs", "extracting outputs",
                                             unit="files")
        try:
            # Reached from the anchor without following a symlink: a task with write_back may
            # have planted one on the way (the out dir itself, say).
            # Outside .buildr/, only what this tool made (and marked) is ever replaced.
            return stage_tar_stream(archive, self.project.output_dir(task.name),
                                    max_bytes=task.max_return_bytes or DEFAULT_MAX_BYTES,
                                    max_entries=task.max_return_entries or DEFAULT_MAX_ENTRIES,
                                    anchor=self.project.out_dir_anchor(),
                                    replace_unmarked=self.project.out_dir_is_ours,
                                    progress=phase)
        finally:
            phase.finish()

    def land(self, task: Task, staged: StagedTree, succeeded: bool,
             observer: RunObserver | None = None) -> Path:
        """Puts the staged outputs in place and returns where: the task's out dir when it
        succeeded (an earlier failure's files, now stale, go), its failed dir when not. The
        renames are instant; removing what they replaced is not (a million files): a long
        landing is reported as phase "land_outputs"."""
        with Phases(observer, task).blocking("land_outputs", "putting outputs in place"):
            return self._land(task, staged, succeeded)

    def _land(self, task: Task, staged: StagedTree, succeeded: bool) -> Path:
        good, failed = self.project.output_dir(task.name), self.project.failed_dir(task.name)
        if not succeeded:
            staged.land(failed)
            return failed
        staged.land(good)
        self._remove_failed(task)
        return good

    def _remove_failed(self, task: Task) -> None:
        """An earlier failure's files, now stale, reached without following a symlink."""
        failed = self.project.failed_dir(task.name)
        try:
            fd = self.project.open_out_dir(failed.parent.name)
        except OSError:
            return
        try:
            # Outside .buildr/, only what this tool made (and marked) is ever removed.
            if lstat_at(failed.name, fd) is not None and (
                    self.project.out_dir_is_ours or is_marked(failed.name, fd)):
                remove_tree_at(failed.name, fd)
        except OSError:
            pass  # a stale failure that stays is no error of this task
        finally:
            os.close(fd)
