"""Runs the chosen tasks with an executor, reporting every event through the plugin hooks."""

from __future__ import annotations

from collections.abc import Sequence

import pluggy

from buildr_podman.errors import BuildrError, ConfigError
from buildr_podman.executor import Executor
from buildr_podman.model import Project, Task, TaskOutcome
from buildr_podman.plugins import executors

__all__ = ["HookObserver", "run_tasks", "select_tasks"]


class HookObserver:
    """Fans run events out to every plugin's observer hooks."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._hook = pm.hook

    def output(self, task: Task, stream: str, data: bytes) -> None:
        self._hook.buildr_task_output(task=task, stream=stream, data=data)

    def log(self, task: Task, message: str) -> None:
        self._hook.buildr_task_log(task=task, message=message)


def select_tasks(project: Project, names: Sequence[str]) -> list[Task]:
    """The named tasks in the order given; an unknown name is a configuration error."""
    unknown = [name for name in names if name not in project.tasks]
    if unknown:
        known = ", ".join(sorted(project.tasks)) or "none"
        raise ConfigError(f"no task named {unknown[0]!r} in {project.root}/.buildr "
                          f"(tasks: {known})")
    return [project.tasks[name] for name in dict.fromkeys(names)]


def pick_executor(pm: pluggy.PluginManager, name: str) -> Executor:
    found = executors(pm)
    if name not in found:
        available = ", ".join(sorted(found)) or "none: is buildr-podman installed?"
        raise BuildrError(f"no executor named {name!r} (available: {available})")
    return found[name]


def run_tasks(pm: pluggy.PluginManager, project: Project, tasks: Sequence[Task],
              executor_name: str = "podman") -> list[TaskOutcome]:
    """Runs tasks one after another in one executor session; returns every outcome."""
    executor = pick_executor(pm, executor_name)
    observer = HookObserver(pm)
    outcomes = []
    with executor.open_session(project) as session:
        for task in tasks:
            pm.hook.buildr_task_started(task=task)
            outcome = session.run_task(task, observer)
            pm.hook.buildr_task_finished(task=task, outcome=outcome)
            outcomes.append(outcome)
    return outcomes
