"""`--output json`: one JSON object per line on stdout, one per event, for tools.

Every event has "event" and "time" (seconds since the epoch). Task output comes as complete
lines ("line", without its newline; bytes that are not UTF-8 become U+FFFD). Events:
run_started, task_started, output, log (with -v), warning, phase_started, phase_progress,
phase_finished (a long phase of a task: "phase", "title", "elapsed_seconds", "done" of "total"
"unit", "bytes"; phases.py), files_returned, task_finished (with "cached" and "cache": why not
cached, or what changed since the last entry), task_skipped, run_cancelling, run_finished.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from buildr_podman.hookspecs import hookimpl
from buildr_podman.model import Project, RunReport, Task, TaskOutcome
from buildr_podman.output.lines import TaskLines, shown_path
from buildr_podman.phases import PhaseUpdate

__all__ = ["JsonReporter", "outcome_fields"]


def outcome_fields(outcome: TaskOutcome) -> dict[str, Any]:
    """An outcome as JSON-ready fields."""
    return {
        "task": outcome.task,
        "status": outcome.status,
        "exit_code": outcome.exit_code,
        "error": outcome.error or None,
        "timed_out": outcome.timed_out,
        "cancelled": outcome.cancelled,
        "skipped": outcome.skipped or None,
        "cached": outcome.cached,
        "cache": outcome.cache_note or None,
        "duration_seconds": round(outcome.duration_seconds, 3),
        "files_returned": outcome.files_returned,
        "bytes_returned": outcome.bytes_returned,
        "deleted_paths": [shown_path(path) for path in outcome.deleted_paths],
        "output_dir": str(outcome.output_dir) if outcome.output_dir else None,
        "tracking": outcome.tracking or None,
        "watched_directories": outcome.watched_directories,
        "tracking_setup_seconds": round(outcome.tracking_setup_seconds, 4),
        "tracking_resolve_seconds": round(outcome.tracking_resolve_seconds, 4),
    }


class JsonReporter:
    """Registered by `run --output json`; writes nothing but JSON lines to stdout."""

    def __init__(self, verbose: bool = False, out: TextIO | None = None) -> None:
        self.verbose = verbose
        self._out = out or sys.stdout
        self._lines = TaskLines()

    @hookimpl
    def buildr_run_started(self, project: Project, tasks: Sequence[Task], jobs: int) -> None:
        self._emit("run_started", root=str(project.root), jobs=jobs,
                   tasks=[{"name": t.name, "category": t.category, "type": t.module_type,
                           "depends_on": list(t.depends_on), "image": t.container.image,
                           "log": str(project.log_path(t.name))} for t in tasks])

    @hookimpl
    def buildr_task_started(self, task: Task) -> None:
        self._emit("task_started", task=task.name)

    @hookimpl
    def buildr_task_output(self, task: Task, stream: str, data: bytes) -> None:
        for line in self._lines.feed(task.name, stream, data):
            self._line(task, stream, line)

    @hookimpl
    def buildr_task_log(self, task: Task, message: str) -> None:
        if self.verbose:
            self._emit("log", task=task.name, message=message)

    @hookimpl
    def buildr_task_warning(self, task: Task, message: str) -> None:
        self._emit("warning", task=task.name, message=message)

    @hookimpl
    def buildr_task_phase(self, task: Task, phase: PhaseUpdate) -> None:
        self._emit(f"phase_{phase.state}", task=task.name, phase=phase.name, title=phase.title,
                   elapsed_seconds=round(phase.elapsed_seconds, 3), done=phase.done,
                   total=phase.total, bytes=phase.bytes, unit=phase.unit or None)

    @hookimpl
    def buildr_task_files_returned(self, task: Task, outcome: TaskOutcome) -> None:
        self._emit("files_returned", task=task.name, output_dir=str(outcome.output_dir),
                   files=outcome.files_returned, bytes=outcome.bytes_returned,
                   deleted_paths=[shown_path(path) for path in outcome.deleted_paths])

    @hookimpl
    def buildr_task_finished(self, task: Task, outcome: TaskOutcome) -> None:
        for stream, rest in self._lines.finish(task.name):
            self._line(task, stream, rest)
        self._emit("task_finished", **outcome_fields(outcome))

    @hookimpl
    def buildr_task_skipped(self, task: Task, reason: str) -> None:
        self._emit("task_skipped", task=task.name, reason=reason)

    @hookimpl
    def buildr_run_cancelling(self, reason: str, running: Sequence[Task]) -> None:
        self._emit("run_cancelling", reason=reason, running=[task.name for task in running])

    @hookimpl
    def buildr_run_finished(self, report: RunReport) -> None:
        self._emit("run_finished", exit_code=report.exit_code, interrupted=report.interrupted,
                   duration_seconds=round(report.duration_seconds, 3),
                   outcomes=[outcome_fields(o) for o in report.outcomes])

    def _line(self, task: Task, stream: str, line: bytes) -> None:
        self._emit("output", task=task.name, stream=stream,
                   line=line.rstrip(b"\n").decode("utf-8", errors="replace"))

    def _emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self._out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._out.flush()
