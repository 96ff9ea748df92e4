"""Long phases of a task (copying its inputs, extracting its outputs, removing its pod), reported
while they last, so that a run is never silent for minutes.

A phase is said only once it has lasted THRESHOLD_SECONDS: fast runs stay as quiet as before,
and a 1,000,000-file extraction or the removal of a container's big layer says what it is doing.
Then its counts go out at most every INTERVAL_SECONDS, and its end once, with its duration. The
counting side is one addition and one clock read per file: cheap on the extraction's hot path.
A phase that blocks in one call (removing a pod) is announced by a timer thread instead.

Updates reach observers through the `buildr_task_phase` hook (hookspecs.py).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from buildr_podman.model import Task

__all__ = ["INTERVAL_SECONDS", "THRESHOLD_SECONDS", "Phase", "PhaseUpdate", "Phases",
           "threshold_seconds"]

THRESHOLD_SECONDS = 1.0  # a phase shorter than this is never said
INTERVAL_SECONDS = 0.5  # between two progress updates of one phase
#: Seconds before a phase is said, for tests (0: every phase, from its start); not a user knob
THRESHOLD_VARIABLE = "BUILDR_PHASE_THRESHOLD"


@dataclass(frozen=True)
class PhaseUpdate:
    """What a phase has done so far; `state` is "started", "progress" or "finished"."""

    state: str
    name: str  #: what the phase is, for tools: "copy_inputs", "extract_outputs", ...
    title: str  #: the same for people: "extracting outputs", "removing pod buildr-x-1f2e"
    elapsed_seconds: float  #: since the phase began (not since it was first said)
    done: int = 0  #: `unit`s done so far (none for a phase that cannot count)
    total: int | None = None  #: how many there are, when known beforehand
    bytes: int = 0  #: bytes moved so far
    unit: str = ""  #: what `done` counts: "files", "paths", or "" for nothing


Report = Callable[[PhaseUpdate], None]


def threshold_seconds() -> float:
    """THRESHOLD_SECONDS, or the test knob's value."""
    try:
        return max(0.0, float(os.environ[THRESHOLD_VARIABLE]))
    except (KeyError, ValueError):
        return THRESHOLD_SECONDS


class Phase:
    """One phase: `advance` as work gets done, `finish` once at the end (also after an error).

    Updates go to `report` from the thread that advances (or from the timer, for `poll`),
    one at a time and in order. A report that raises is ignored: progress must never fail
    the work it describes.
    """

    def __init__(self, report: Report | None, name: str, title: str, *, unit: str = "",
                 total: int | None = None, clock: Callable[[], float] = time.monotonic,
                 threshold: float = THRESHOLD_SECONDS,
                 interval: float = INTERVAL_SECONDS) -> None:
        self._report = report
        self.name = name
        self.title = title
        self.unit = unit
        self.total = total
        self.done = 0
        self.bytes = 0
        self._clock = clock
        self._interval = interval
        self._began = clock()
        # Never, for a phase nobody listens to: advance() then costs one comparison.
        self._due = self._began + threshold if report is not None else float("inf")
        self._said = False
        self._ended = False
        self._lock = threading.Lock()
        if self._due <= self._began:
            self.poll()

    @property
    def said(self) -> bool:
        """Whether the phase has been reported (it lasted the threshold)."""
        return self._said

    def advance(self, count: int = 1, nbytes: int = 0) -> None:
        self.done += count
        self.bytes += nbytes
        if self._clock() >= self._due:
            self.poll()

    def poll(self) -> None:
        """Reports the phase if an update is due: its start past the threshold, then its
        counts every interval."""
        with self._lock:
            now = self._clock()
            if self._ended or now < self._due:
                return
            self._due = now + self._interval
            state = "progress" if self._said else "started"
            self._said = True
            self._send(state, now)

    def finish(self) -> None:
        """Ends the phase: its last counts and duration, if it was said at all."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            if self._said:
                self._send("finished", self._clock())

    def _send(self, state: str, now: float) -> None:
        assert self._report is not None  # a phase without a report is never due
        update = PhaseUpdate(state=state, name=self.name, title=self.title,
                             elapsed_seconds=now - self._began, done=self.done,
                             total=self.total, bytes=self.bytes, unit=self.unit)
        try:
            self._report(update)
        except Exception:  # noqa: BLE001, S110 - a broken observer must not fail the work
            pass


class Phases:
    """Makes the phases of one task, reported to its observer's `phase(task, update)` (an
    observer without one, as executors' own stand-ins may be, hears nothing)."""

    def __init__(self, observer: Any, task: Task) -> None:
        method = getattr(observer, "phase", None)
        self._report: Report | None = (
            (lambda update: method(task, update)) if method is not None else None)
        self._threshold = threshold_seconds()

    def start(self, name: str, title: str, *, unit: str = "",
              total: int | None = None) -> Phase:
        """A phase that counts: said at its first `advance` past the threshold."""
        return Phase(self._report, name, title, unit=unit, total=total,
                     threshold=self._threshold)

    @contextmanager
    def blocking(self, name: str, title: str) -> Iterator[Phase]:
        """A phase spent in calls that do not count (waiting for Podman): a timer says it
        once it has lasted the threshold, whatever the calling thread is doing."""
        phase = Phase(self._report, name, title, threshold=self._threshold)
        timer = None
        if self._report is not None and not phase.said:
            timer = threading.Timer(self._threshold, phase.poll)
            timer.daemon = True
            timer.start()
        try:
            yield phase
        finally:
            if timer is not None:
                timer.cancel()
            phase.finish()
