"""An executor session opened when the first task needs it: a run whose tasks are all cache hits
starts no API service and no container.

The session opens in the worker thread of the first task that misses; the others wait for it.
If opening fails, that task and every later one fail with the same error, and the run ends by
raising it (`failure`), so the command line still exits with its class's code.

A run whose every task will run (--no-cache) need not wait for its first task: open_early()
opens in a thread of its own at once, and starts the first task's pod there (the session's
`prestart`, when it has one), so that the API service's start, the agent's check and the pod's
start (~0.2 s) overlap with keying the first task (which asks the podman CLI for its image
id) instead of following it.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from pathlib import Path

from buildr_podman.errors import BuildrError
from buildr_podman.executor import Executor, ExecutorSession, RunObserver
from buildr_podman.model import Project, Task, TaskOutcome, TaskResult

__all__ = ["LazySession"]


class LazySession:
    """An ExecutorSession of `executor`, opened on the first run_task; close() closes it."""

    def __init__(self, executor: Executor, project: Project) -> None:
        self._executor = executor
        self._project = project
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self._session: ExecutorSession | None = None
        self._landed: list[tuple[Task, Path]] = []
        self.failure: BuildrError | None = None  #: why the session could not open
        self.opened = False
        self._early: threading.Thread | None = None

    def open_early(self, first: Task | None = None) -> None:
        """Starts opening now, in the background, then starting the pod of `first` (a task
        that will run first); run_task waits for the opening (the lock), the task for its
        pod."""
        self._early = threading.Thread(target=self._open_quietly, args=(first,),
                                       name="session-open", daemon=True)
        self._early.start()

    def _open_quietly(self, first: Task | None) -> None:
        try:
            with self._lock:  # reserved before run_task can look for the pod (see _open)
                session = self._open_locked()
                prestart = getattr(session, "prestart", None)
                start = prestart(first) if first is not None and prestart is not None else None
            if start is not None:
                start()
        except BuildrError:
            pass  # kept in self.failure: the first task raises it
        except Exception:  # noqa: BLE001 - not kept: the first task's own attempt raises it
            pass

    def run_task(self, task: Task, observer: RunObserver) -> TaskResult | TaskOutcome:
        return self._open().run_task(task, observer)

    def outputs_landed(self, task: Task, output_dir: Path) -> None:
        """Where a task's outputs of this run landed without the session (a cache hit): the
        session shows them to the tasks that use them."""
        with self._lock:
            self._landed.append((task, output_dir))
            if self._session is not None:
                _tell(self._session, task, output_dir)

    def _open(self) -> ExecutorSession:
        with self._lock:
            return self._open_locked()

    def _open_locked(self) -> ExecutorSession:
        if self.failure is not None:
            raise self.failure
        if self._session is None:
            try:
                session = self._stack.enter_context(self._executor.open_session(self._project))
            except BuildrError as exc:
                self.failure = exc
                raise
            for task, output_dir in self._landed:
                _tell(session, task, output_dir)
            self._session = session
            self.opened = True
        return self._session

    def close(self) -> None:
        if self._early is not None:
            self._early.join()  # a session half-opened in the background must close too
        self._stack.close()


def _tell(session: ExecutorSession, task: Task, output_dir: Path) -> None:
    landed = getattr(session, "outputs_landed", None)
    if landed is not None:
        landed(task, output_dir)
