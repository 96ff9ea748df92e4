"""run_task's termination callback: it stops a running task, and is inert once the task ended
(gRPC calls it at every call's end, when the task's pid may already be reused)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from buildr_podman._protos.archive_wire import archive_event_prefix
from buildr_podman.agent import task_run
from buildr_podman.agent.process import TaskProcess
from buildr_podman.agent.task_run import TaskRequest, TaskSummary


class FakeContext:
    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.callbacks.append(callback)
        return True


def test_the_callback_does_nothing_after_the_task_ended(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[TaskProcess] = []
    monkeypatch.setattr(TaskProcess, "kill", lambda self: kills.append(self))
    context = FakeContext()
    request = TaskRequest(argv=["/bin/sh", "-c", "echo made > out.txt"],
                          workspace=str(tmp_path), working_dir=str(tmp_path))
    events = list(task_run.run_task(request, context.add_callback, lambda changes: None,
                                    archive_event_prefix))
    summary = events[-1]
    assert isinstance(summary, TaskSummary)
    assert summary.exit_code == 0 and summary.files_returned == 1
    (callback,) = context.callbacks
    callback()
    assert kills == []


def test_the_callback_stops_a_task_still_running(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    context = FakeContext()
    request = TaskRequest(argv=["/bin/sh", "-c", "echo up; sleep 60"],
                          workspace=str(tmp_path), working_dir=str(tmp_path))
    events = task_run.run_task(request, context.add_callback, lambda changes: None,
                               archive_event_prefix)
    first = next(events)
    assert not isinstance(first, (bytes, TaskSummary)) and first.data == b"up\n"
    (callback,) = context.callbacks
    callback()  # as gRPC does when the host cancels
    result = [event for event in events][-1]
    assert isinstance(result, TaskSummary) and result.exit_code in (128 + 15, 128 + 9)
