"""The built-in terminal reporter: the task's output live, then one line per finished task."""

from __future__ import annotations

import os
import sys
from typing import BinaryIO, TextIO

from buildr_podman.hookspecs import hookimpl
from buildr_podman.model import Task, TaskOutcome

__all__ = ["TerminalReporter"]


class TerminalReporter:
    """Registered by the command line; `verbose` adds the executor's log and deletions."""

    def __init__(self, verbose: bool = False, out: BinaryIO | None = None,
                 err: TextIO | None = None) -> None:
        self.verbose = verbose
        self._out = out or sys.stdout.buffer
        self._err_bytes = sys.stderr.buffer if err is None else None
        self._err = err or sys.stderr

    @hookimpl
    def buildr_task_started(self, task: Task) -> None:
        self._say(f"buildr: running {task.name} in {task.container.image}")

    @hookimpl
    def buildr_task_output(self, task: Task, stream: str, data: bytes) -> None:
        sink = self._out if stream == "stdout" else self._err_bytes
        if sink is None:
            self._err.write(data.decode(errors="replace"))
            return
        sink.write(data)
        sink.flush()

    @hookimpl
    def buildr_task_log(self, task: Task, message: str) -> None:
        if self.verbose:
            self._say(f"buildr: {task.name}: {message}")

    @hookimpl
    def buildr_task_finished(self, task: Task, outcome: TaskOutcome) -> None:
        if outcome.error:
            verdict = f"failed: {outcome.error}"
        elif outcome.timed_out:
            verdict = "timed out"
        elif outcome.exit_code:
            verdict = f"failed with exit code {outcome.exit_code}"
        else:
            verdict = "ok"
        where = _display(outcome.output_dir) if outcome.output_dir else "nowhere"
        self._say(f"buildr: {task.name} {verdict} in {outcome.duration_seconds:.1f} s; "
                  f"{outcome.files_returned} files ({outcome.bytes_returned} bytes) back in "
                  f"{where}")
        if self.verbose:
            self._say(f"buildr: {task.name}: changes found by {outcome.tracking or 'n/a'}")
            for path in outcome.deleted_paths:
                self._say(f"buildr: {task.name}: deleted {path}")

    def _say(self, line: str) -> None:
        self._err.write(line + "\n")
        self._err.flush()


def _display(path: os.PathLike[str]) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
