"""The interface between the host and an executor backend (Podman is one, loaded as a plugin)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from buildr_podman.model import Project, Task, TaskOutcome, TaskResult

__all__ = ["Executor", "ExecutorSession", "RunObserver"]


class RunObserver(Protocol):
    """Where a session reports what happens while a task runs (the host fans it out to hooks)."""

    def output(self, task: Task, stream: str, data: bytes) -> None: ...

    def log(self, task: Task, message: str) -> None: ...


class ExecutorSession(Protocol):
    """Resources held for one run of the host (an API service, cached pods); closed at the end."""

    def run_task(self, task: Task, observer: RunObserver) -> TaskResult | TaskOutcome:
        """Runs the task and puts what it changed under the project's out dir; returns the
        facts of the run (a TaskOutcome, as older executors return, is read the same way).

        Returns the outcome even when the task fails; raises BuildrError when the backend
        itself cannot run it (the image is missing, the engine failed).
        """
        ...


class Executor(Protocol):
    """A backend that runs tasks; `name` is how users pick it."""

    name: str

    def open_session(self, project: Project) -> AbstractContextManager[ExecutorSession]:
        """Acquires what runs need; leaving the context releases all of it, even on errors."""
        ...
