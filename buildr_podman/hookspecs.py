"""Every hook a buildr plugin can implement, with when it is called and what it returns.

Plugins come from the entry-point group ``buildr`` (and ``-p module`` on the command line).
Implement a hook with ``@buildr_podman.hookimpl`` on a module-level function or a method.
All hooks are called from the main thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from buildr_podman.executor import Executor
    from buildr_podman.model import Task, TaskOutcome

__all__ = ["hookimpl", "hookspec"]

PROJECT_NAME = "buildr"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- executors -------------------------------------------------------------------------------

@hookspec
def buildr_executors() -> list[Executor]:
    """Return the executor backends this plugin provides (may be empty).

    Called once after plugins are loaded. Each executor has a unique ``name``; the host runs
    tasks with the one named by ``--executor`` (default ``podman``). Creating an executor must
    be cheap: defer connections and heavy imports to ``Executor.open_session``.
    """


# -- run events (observers) ------------------------------------------------------------------

@hookspec
def buildr_task_started(task: Task) -> None:
    """A task is about to run. Return value ignored."""


@hookspec
def buildr_task_output(task: Task, stream: str, data: bytes) -> None:
    """A piece of the task's output arrived, as it came: ``stream`` is "stdout" or "stderr".

    Pieces are not split at line ends. Keep this fast: it runs on the streaming path.
    """


@hookspec
def buildr_task_log(task: Task, message: str) -> None:
    """A progress message about the task from the executor (not the task's own output)."""


@hookspec
def buildr_task_finished(task: Task, outcome: TaskOutcome) -> None:
    """A task ended; ``outcome`` holds its exit code, errors and what came back."""
