"""The plain reporter, for logs and CI: output as it comes, one line per event, a table at the end.

With one task at a time the task's output passes through untouched (stdout to stdout, stderr
to stderr). When several run at once, each line gets a `name |` prefix, coloured on a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import BinaryIO, TextIO

from buildr_podman.hookspecs import hookimpl
from buildr_podman.model import Project, RunReport, Task, TaskOutcome
from buildr_podman.output.lines import (
    PALETTE,
    TaskLines,
    colour_enabled,
    is_terminal,
    paint,
    shown_path,
)
from buildr_podman.output.summary import (
    counts_line,
    display_path,
    duration,
    failures,
    files,
    phase_counts,
    rows,
    verdict,
)
from buildr_podman.phases import PhaseUpdate

__all__ = ["PlainReporter", "TerminalReporter"]


class PlainReporter:
    """Registered by `run --output plain` (and by "auto" off a terminal)."""

    def __init__(self, verbose: bool = False, out: BinaryIO | None = None,
                 err: TextIO | None = None) -> None:
        self.verbose = verbose
        self._out = out or sys.stdout.buffer
        self._err = err or sys.stderr
        self._err_bytes: BinaryIO | None = getattr(self._err, "buffer", None)
        self._prefixed = False
        self._colour = colour_enabled(self._err)
        self._prefixes: dict[str, str] = {}
        self._lines = TaskLines()
        self._tolerant: set[str] = set()
        self._terminal = {"stdout": is_terminal(self._out), "stderr": is_terminal(self._err)}
        # The stream whose last output left a terminal line open (no final newline): our next
        # line must not be glued to it. Only on a terminal: piped output stays byte for byte.
        self._open_line: str | None = None
        self._removal_said = False  # a long pod removal: then even one task gets a total line

    # -- hooks --------------------------------------------------------------------------------

    @hookimpl
    def buildr_run_started(self, project: Project, tasks: Sequence[Task], jobs: int) -> None:
        self._prefixed = len(tasks) > 1 and jobs > 1
        width = max((len(task.name) for task in tasks), default=0)
        for index, task in enumerate(tasks):
            label = f"{task.name:<{width}} | "
            self._prefixes[task.name] = paint(label, PALETTE[index % len(PALETTE)], self._colour)
            if task.continue_on_error:
                self._tolerant.add(task.name)

    @hookimpl
    def buildr_task_started(self, task: Task) -> None:
        self._say(f"buildr: running {task.name} in {task.container.image}")

    @hookimpl
    def buildr_task_output(self, task: Task, stream: str, data: bytes) -> None:
        if not self._prefixed:
            self._write(stream, data)
            return
        for line in self._lines.feed(task.name, stream, data):
            self._write(stream, self._prefix(task) + line)

    @hookimpl
    def buildr_task_log(self, task: Task, message: str) -> None:
        if self.verbose:
            self._say(f"buildr: {task.name}: {message}")

    @hookimpl
    def buildr_task_warning(self, task: Task, message: str) -> None:
        self._say(f"buildr: {task.name}: warning: {message}")

    @hookimpl
    def buildr_task_phase(self, task: Task, phase: PhaseUpdate) -> None:
        # Two lines per long phase, none for a short one (phases.py): a log stays readable.
        if phase.state == "started":
            self._say(f"buildr: {task.name}: {phase.title}...")
        elif phase.state == "finished":
            self._removal_said |= phase.name == "remove_pod"
            counts = phase_counts(phase)
            self._say(f"buildr: {task.name}: {phase.title} took "
                      f"{duration(phase.elapsed_seconds)}" + (f" ({counts})" if counts else ""))

    @hookimpl
    def buildr_task_finished(self, task: Task, outcome: TaskOutcome) -> None:
        self._flush_lines(task)
        said = verdict(outcome, task.name in self._tolerant)
        took = f"in {outcome.duration_seconds:.1f} s"
        if outcome.error and not outcome.cancelled:
            self._say(f"buildr: {task.name} {said} {took}: {outcome.error}")
        elif outcome.output_dir is None:
            self._say(f"buildr: {task.name} {said} {took}")
        else:
            where = display_path(outcome.output_dir) or "nowhere"
            self._say(f"buildr: {task.name} {said} {took}; {files(outcome.files_returned)} "
                      f"({outcome.bytes_returned} bytes) back in {where}")
        if self.verbose:
            self._say(f"buildr: {task.name}: changes found by {outcome.tracking or 'n/a'}")
            for path in outcome.deleted_paths:
                self._say(f"buildr: {task.name}: deleted {shown_path(path)}")

    @hookimpl
    def buildr_task_skipped(self, task: Task, reason: str) -> None:
        self._say(f"buildr: {task.name} skipped: {reason}")

    @hookimpl
    def buildr_run_cancelling(self, reason: str, running: Sequence[Task]) -> None:
        names = ", ".join(task.name for task in running)
        self._say(f"buildr: {reason}" + (f"; stopping {names}" if names else ""))

    @hookimpl
    def buildr_run_finished(self, report: RunReport) -> None:
        if len(report.outcomes) > 1:
            self._table(report)
        elif self._removal_said:
            self._say(f"buildr: {counts_line(report)}")  # the task's time leaves the removal out
        # Errors last, so that the final lines of a failed run say what went wrong.
        if len(report.outcomes) > 1:
            for outcome in failures(report):
                self._say(f"buildr: error: {outcome.task}: {outcome.error}")

    # -- helpers ------------------------------------------------------------------------------

    def _table(self, report: RunReport) -> None:
        table = rows(report)
        headers = ("module", "status", "time", "files", "out")
        cells = [headers] + [(r.name, r.status, r.time, r.files, r.where) for r in table]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers) - 1)]
        self._say("buildr: summary")
        for row in cells:
            padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            self._say("  " + "  ".join([*padded, row[-1]]).rstrip())
        self._say(f"buildr: {counts_line(report)}")

    def _prefix(self, task: Task) -> bytes:
        return self._prefixes.get(task.name, f"{task.name} | ").encode()

    def _flush_lines(self, task: Task) -> None:
        for stream, rest in self._lines.finish(task.name):
            self._write(stream, self._prefix(task) + rest)

    def _write(self, stream: str, data: bytes) -> None:
        if data:
            open_line = not data.endswith(b"\n") and self._terminal.get(stream, False)
            self._open_line = stream if open_line else None
        if stream == "stdout":
            self._out.write(data)
            self._out.flush()
        elif self._err_bytes is not None:
            self._err.flush()
            self._err_bytes.write(data)
            self._err_bytes.flush()
        else:
            self._err.write(data.decode(errors="replace"))
            self._err.flush()

    def _say(self, line: str) -> None:
        if self._open_line is not None:
            self._write(self._open_line, b"\n")
        self._err.write(line + "\n")
        self._err.flush()


#: The name this reporter had before it had siblings.
TerminalReporter = PlainReporter
