"""The rich reporter, for a terminal: a live panel of running tasks above their output lines.

Output lines print above the panel (with a coloured `name |` prefix when several tasks run);
each finished task gets a line with its elapsed time, and the run ends with a summary table.
Everything goes to stderr's terminal; it is only chosen when stdout is a terminal too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from buildr_podman.hookspecs import hookimpl
from buildr_podman.model import Project, RunReport, Task, TaskOutcome
from buildr_podman.output.lines import TaskLines
from buildr_podman.output.sanitize import terminal_safe
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

__all__ = ["RichReporter"]

STYLES = ("cyan", "yellow", "magenta", "green", "blue", "bright_cyan", "bright_yellow",
          "bright_magenta", "bright_green", "bright_blue")
STATUS_STYLES = {"ok": "green", "failed": "red", "timed-out": "red", "cancelled": "yellow",
                 "skipped": "dim"}


class RichReporter:
    """Registered by `run --output rich` (and by "auto" on a terminal)."""

    def __init__(self, verbose: bool = False, console: Console | None = None) -> None:
        self.verbose = verbose
        self.console = console or Console(stderr=True, highlight=False)
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._styles: dict[str, str] = {}
        self._width = 0
        self._prefixed = False
        self._total = 0
        self._done = 0
        self._failed = 0
        self._running: dict[str, tuple[float, Spinner]] = {}
        #: long phases under way, by (task, title): when each began, its last update
        self._phases: dict[tuple[str, str], tuple[float, PhaseUpdate, Spinner]] = {}
        self._removal_said = False  # a long pod removal: then even one task gets a total line
        self._lines = TaskLines()
        self._tolerant: set[str] = set()

    @hookimpl
    def buildr_run_started(self, project: Project, tasks: Sequence[Task], jobs: int) -> None:
        self._total = len(tasks)
        self._prefixed = len(tasks) > 1
        self._width = max((len(task.name) for task in tasks), default=0)
        for index, task in enumerate(tasks):
            self._styles[task.name] = STYLES[index % len(STYLES)]
            if task.continue_on_error:
                self._tolerant.add(task.name)
        self._live = Live(console=self.console, refresh_per_second=8, transient=True,
                          get_renderable=self._render, redirect_stdout=False,
                          redirect_stderr=False)
        self._live.start()

    @hookimpl
    def buildr_task_started(self, task: Task) -> None:
        with self._lock:
            self._running[task.name] = (time.monotonic(),
                                        Spinner("dots", style=self._styles.get(task.name)))

    @hookimpl
    def buildr_task_output(self, task: Task, stream: str, data: bytes) -> None:
        for line in self._lines.feed(task.name, stream, data):
            self._print_line(task, line)

    @hookimpl
    def buildr_task_log(self, task: Task, message: str) -> None:
        if self.verbose:
            self.console.print(Text(f"{task.name}: {message}", style="dim"))

    @hookimpl
    def buildr_task_warning(self, task: Task, message: str) -> None:
        self.console.print(Text(f"{task.name}: warning: {message}", style="yellow"))

    @hookimpl
    def buildr_task_phase(self, task: Task, phase: PhaseUpdate) -> None:
        key = (task.name, phase.title)
        with self._lock:
            if phase.state == "finished":
                self._phases.pop(key, None)
            else:
                began = time.monotonic() - phase.elapsed_seconds
                spinner = self._phases[key][2] if key in self._phases else Spinner(
                    "dots", style=self._styles.get(task.name))
                self._phases[key] = (began, phase, spinner)
        if phase.state == "finished":
            self._removal_said |= phase.name == "remove_pod"
            counts = phase_counts(phase)
            self.console.print(Text(f"{task.name}: {phase.title} took "
                                    f"{duration(phase.elapsed_seconds)}"
                                    + (f" ({counts})" if counts else ""), style="dim"))

    @hookimpl
    def buildr_task_finished(self, task: Task, outcome: TaskOutcome) -> None:
        for _stream, rest in self._lines.finish(task.name):
            self._print_line(task, rest)
        with self._lock:
            self._running.pop(task.name, None)
            self._done += 1
            self._failed += 0 if outcome.succeeded else 1
        self.console.print(self._finished_line(task, outcome))

    @hookimpl
    def buildr_task_skipped(self, task: Task, reason: str) -> None:
        with self._lock:
            self._done += 1
        self.console.print(Text(f"- {task.name} skipped: {reason}", style="dim"))

    @hookimpl
    def buildr_run_cancelling(self, reason: str, running: Sequence[Task]) -> None:
        names = ", ".join(task.name for task in running)
        self.console.print(Text(f"{reason}" + (f": stopping {names}" if names else ""),
                                style="bold yellow"))

    @hookimpl
    def buildr_run_finished(self, report: RunReport) -> None:
        self.close()
        if len(report.outcomes) > 1:
            self.console.print(self._table(report))
            for outcome in failures(report):
                self.console.print(Text(f"error: {outcome.task}: {outcome.error}", style="red"))
        elif self._removal_said:
            self.console.print(Text(counts_line(report), style="dim"))

    def close(self) -> None:
        """Stops the live panel (also after an error that ended the run early)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -- rendering ----------------------------------------------------------------------------

    def _render(self) -> Any:
        with self._lock:
            running = list(self._running.items())
            phases = list(self._phases.items())
            summary = f"{self._done}/{self._total} done"
            if self._failed:
                summary += f", {self._failed} failed"
        grid = Table.grid(padding=(0, 1))
        now = time.monotonic()
        for name, (started, spinner) in running:
            style = self._styles.get(name, "")
            grid.add_row(spinner, Text(name.ljust(self._width), style=style),
                         Text(f"{now - started:5.1f} s", style="dim"))
        for (name, title), (began, update, spinner) in phases:
            counts = phase_counts(update)
            grid.add_row(spinner, Text(name.ljust(self._width), style=self._styles.get(name, "")),
                         Text(f"{now - began:5.1f} s", style="dim"),
                         Text(title + (f": {counts}" if counts else "")))
        return Group(grid, Text(summary, style="dim"))

    def _print_line(self, task: Task, line: bytes) -> None:
        text = Text.from_ansi(terminal_safe(line.rstrip(b"\n").decode("utf-8", errors="replace")))
        if self._prefixed:
            prefix = Text(f"{task.name.ljust(self._width)} | ",
                          style=self._styles.get(task.name, ""))
            text = Text.assemble(prefix, text)
        self.console.print(text, soft_wrap=True)

    def _finished_line(self, task: Task, outcome: TaskOutcome) -> Text:
        status = outcome.status
        mark = {"ok": "✓", "cancelled": "-"}.get(status, "✗")
        style = STATUS_STYLES.get(status, "")
        line = Text(f"{mark} ", style=style)
        line.append(task.name, style=f"bold {self._styles.get(task.name, '')}")
        line.append(f" {verdict(outcome, task.name in self._tolerant)}", style=style)
        line.append(f" in {outcome.duration_seconds:.1f} s", style="dim")
        if outcome.error and not outcome.cancelled:
            line.append(f": {outcome.error}", style=style)
        elif outcome.output_dir:
            line.append(f"; {files(outcome.files_returned)} back in "
                        f"{display_path(outcome.output_dir)}", style="dim")
        return line

    def _table(self, report: RunReport) -> Table:
        table = Table(title=None, caption=counts_line(report), box=None, pad_edge=False)
        for header in ("module", "status", "time", "files", "out"):
            table.add_column(header, justify="right" if header in ("time", "files") else "left")
        for row in rows(report):
            style = STATUS_STYLES.get(row.status.split(" ")[0], "")
            table.add_row(Text(row.name, style=self._styles.get(row.name, "")),
                          Text(row.status, style=style), row.time, row.files, row.where)
        return table
