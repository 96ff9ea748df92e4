"""Keeps each task's full log in `<out_dir>/.logs/<task>.log`: its output as it came, and our notes.

Lines of our own start with `# buildr:`; the task's stdout and stderr are written unchanged,
interleaved in the order they arrived. The file is rewritten by every run of the task.
"""

from __future__ import annotations

import os
import time
from typing import BinaryIO

from buildr_podman.archive.beneath import create_file_at
from buildr_podman.hookspecs import hookimpl
from buildr_podman.model import Project, Task, TaskOutcome
from buildr_podman.output.summary import duration, phase_counts, verdict
from buildr_podman.phases import PhaseUpdate

__all__ = ["TaskLogs"]


class TaskLogs:
    """Registered by the runner for the length of one run."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._files: dict[str, BinaryIO] = {}
        self._at_line_start: dict[str, bool] = {}

    @hookimpl
    def buildr_task_started(self, task: Task) -> None:
        try:
            logs_fd = self.project.open_out_dir(self.project.log_path(task.name).parent.name)
            try:
                # A new file, through the logs directory's fd: a symlink a task planted at the
                # log's place (or on the way to it) is replaced or refused, never written through.
                fd = create_file_at(self.project.log_path(task.name).name, logs_fd,
                                    replace_unmarked=self.project.out_dir_is_ours)
            finally:
                os.close(logs_fd)
            # Unbuffered: `tail -f` shows the output as it arrives, and a crash loses nothing.
            self._files[task.name] = open(fd, "wb", buffering=0)  # noqa: SIM115 - closed later
        except OSError:
            return  # a log we cannot write must not fail the task; the terminal still has it
        self._at_line_start[task.name] = True
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
        self._note(task, f"{task.category} {task.name} ({task.module_type}) in "
                         f"{task.container.image}, started {stamp}")

    @hookimpl
    def buildr_task_output(self, task: Task, stream: str, data: bytes) -> None:
        file = self._files.get(task.name)
        if file is not None and data:
            self._write(file, task, data)

    @hookimpl
    def buildr_task_log(self, task: Task, message: str) -> None:
        self._note(task, message)

    @hookimpl
    def buildr_task_warning(self, task: Task, message: str) -> None:
        self._note(task, f"warning: {message}")

    @hookimpl
    def buildr_task_phase(self, task: Task, phase: PhaseUpdate) -> None:
        if phase.state == "finished":  # the time it took: why the task took as long as it did
            counts = phase_counts(phase)
            self._note(task, f"{phase.title} took {duration(phase.elapsed_seconds)}"
                             + (f" ({counts})" if counts else ""))

    @hookimpl
    def buildr_task_finished(self, task: Task, outcome: TaskOutcome) -> None:
        detail = f": {outcome.error}" if outcome.error else ""
        self._note(task, f"{task.name} {verdict(outcome, task.continue_on_error)} in "
                         f"{outcome.duration_seconds:.1f} s{detail}")
        file = self._files.pop(task.name, None)
        if file is not None:
            file.close()

    def close(self) -> None:
        for file in self._files.values():
            file.close()
        self._files.clear()

    def _note(self, task: Task, message: str) -> None:
        file = self._files.get(task.name)
        if file is None:
            return
        prefix = b"" if self._at_line_start.get(task.name, True) else b"\n"
        lines = "".join(f"# buildr: {line}\n" for line in message.rstrip("\n").split("\n"))
        self._write(file, task, prefix + lines.encode())

    def _write(self, file: BinaryIO, task: Task, data: bytes) -> None:
        try:
            file.write(data)
        except OSError:
            return
        self._at_line_start[task.name] = data.endswith(b"\n")
