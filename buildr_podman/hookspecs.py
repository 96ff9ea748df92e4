"""Every hook a buildr plugin can implement, with when it is called and what it returns.

Plugins come from the entry-point group ``buildr`` (and ``-p module`` on the command line).
Implement a hook with ``@buildr_podman.hookimpl`` on a module-level function or a method;
a misspelt hook name fails at start-up. The hooks fall in four groups:

- **configure**: executor backends and module types (called once, from the main thread);
- **run events**: what observers see while ``buildr-podman run`` works. Tasks run in worker
  threads, so these may be called from any thread, but never two at once: the host holds one
  lock around every run-event call, and an observer needs no locking of its own. Keep them
  quick; output hooks sit on the streaming path;
- **stop**: cancelling running tasks (main thread);
- **maintenance**: ``buildr-podman doctor`` and ``buildr-podman clean`` (main thread).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from buildr_podman.doctor import Finding
    from buildr_podman.executor import Executor
    from buildr_podman.model import Project, RunReport, Task, TaskOutcome
    from buildr_podman.moduletype import ModuleType
    from buildr_podman.phases import PhaseUpdate

__all__ = ["hookimpl", "hookspec"]

PROJECT_NAME = "buildr"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- configure -------------------------------------------------------------------------------

@hookspec
def buildr_executors() -> list[Executor]:  # type: ignore[empty-body]
    """Return the executor backends this plugin provides (may be empty).

    Called once after plugins are loaded. Each executor has a unique ``name``; the host runs
    tasks with the one named by ``--executor`` (default ``podman``). Creating an executor must
    be cheap: defer connections and heavy imports to ``Executor.open_session``.
    """


@hookspec
def buildr_module_types() -> list[ModuleType]:  # type: ignore[empty-body]
    """Return the module types this plugin provides (may be empty): its inventory.

    Called once, before the configuration is read. A ``ModuleType`` names the first block
    label (``task "make" "name" {}``) and its category (``task``, ``build``, ``tool`` or
    ``package``), declares its own attributes with their kinds and defaults (its default
    spec), carries help examples, and expands the attributes into the script the task's shell
    runs. Two plugins may not provide the same category and name.
    """


# -- run events (observers) ------------------------------------------------------------------

@hookspec
def buildr_run_started(project: Project, tasks: Sequence[Task], jobs: int) -> None:
    """A run begins: ``tasks`` are all the modules it may run, dependencies first, and at most
    ``jobs`` run at once. Return value ignored."""


@hookspec
def buildr_task_started(task: Task) -> None:
    """A task is about to run (its dependencies have ended). Return value ignored."""


@hookspec
def buildr_task_output(task: Task, stream: str, data: bytes) -> None:
    """A piece of the task's output arrived, as it came: ``stream`` is "stdout" or "stderr".

    Pieces are not split at line ends. Keep this fast: it runs on the streaming path.
    """


@hookspec
def buildr_task_log(task: Task, message: str) -> None:
    """A progress message about the task from the executor (not the task's own output)."""


@hookspec
def buildr_task_warning(task: Task, message: str) -> None:
    """Something about the task the user must see even without -v: what the host refused to
    do for it (a write-back into .buildr/, say). One line; return value ignored."""


@hookspec
def buildr_task_phase(task: Task, phase: PhaseUpdate) -> None:
    """A long phase of the task's run, outside its own process: copying its inputs in,
    extracting its outputs, putting them in place, writing them back, removing its pod.

    Only phases that last (a second, by default) are reported: ``phase.state`` "started" once
    the phase has lasted that long, "progress" at most twice a second with its counts
    (``done`` of ``total`` ``unit``, ``bytes``), "finished" once with its whole duration
    (``elapsed_seconds``). The removal of a pod kept warm for later tasks comes at the end of
    the run, after its last task has finished, before ``buildr_run_finished``. Return value
    ignored.
    """


@hookspec
def buildr_task_files_returned(task: Task, outcome: TaskOutcome) -> None:
    """The task's changed files are in ``outcome.output_dir`` (``outcome.files_returned`` files,
    ``outcome.bytes_returned`` bytes; ``outcome.deleted_paths`` are gone). Called just before
    ``buildr_task_finished``, only when the task's files came back."""


@hookspec
def buildr_task_finished(task: Task, outcome: TaskOutcome) -> None:
    """A task ended; ``outcome`` holds its exit code, errors and what came back.

    ``outcome.status`` is "ok", "failed", "timed-out" or "cancelled".
    """


@hookspec
def buildr_task_skipped(task: Task, reason: str) -> None:
    """A module of the run will not run: a dependency failed, or the run was cancelled."""


@hookspec
def buildr_run_cancelling(reason: str, running: Sequence[Task]) -> None:
    """The run is being cancelled (Ctrl-C, or a failure without ``--keep-going``); the
    ``running`` tasks are being stopped and will report ``buildr_task_finished`` shortly."""


@hookspec
def buildr_run_finished(report: RunReport) -> None:
    """The run ended: every module's outcome in plan order (skipped ones included), its
    duration and exit code. Write reports here."""


# -- stop ------------------------------------------------------------------------------------

@hookspec
def buildr_cancel_running(executor_name: str) -> None:
    """Stop, at once, every task this process is running with the executor named.

    Called from the main thread (on Ctrl-C, or when a failure cancels the run) while worker
    threads are inside ``ExecutorSession.run_task``; those calls must then return or raise
    promptly and still clean up after themselves. Implement it for your own executor only
    (compare ``executor_name``). Without an implementation, a task stops at its next output.
    """


# -- maintenance -----------------------------------------------------------------------------

@hookspec
def buildr_doctor(project: Project | None, image: str | None) -> Iterable[Finding]:  # type: ignore[empty-body]
    """Check that this machine can run tasks; yield one ``Finding`` per check as it completes.

    ``project`` is the repository's configuration when there is one (to check, say, the
    images it uses), ``image`` an image the user asked to test with. A generator is best:
    the command prints each finding as it comes. A finding with status "fail" makes
    ``buildr-podman doctor`` exit 1, and its ``fix`` says what to do.
    """


@hookspec
def buildr_clean(everything: bool, root: Path | None) -> Iterable[str]:  # type: ignore[empty-body]
    """Remove what runs of this user left behind (pods, containers, sockets, stale builds);
    return one line per thing removed or kept, saying what and why.

    Without ``everything``, keep what a live ``buildr-podman`` process is using.
    """
