"""Runs modules in dependency order, up to `jobs` at once, and reports every event through hooks.

The main thread schedules (graph.Plan says what may start) and waits; each task runs in a
worker thread inside one executor session. Ctrl-C or a failure without keep-going cancels: the
plan starts nothing more, `buildr_cancel_running` stops what runs, and an observer that is
called for a cancelled task raises TaskCancelled, so every worker unwinds through the
executor's own clean-up (its pod is removed) before the session closes.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from buildr_podman.archive.beneath import open_directory_beneath
from buildr_podman.archive.write_back import laid_over_by_layers, write_back
from buildr_podman.errors import BuildrError, ConfigError, UsageError, printable
from buildr_podman.executor import Executor, ExecutorSession
from buildr_podman.graph import Plan
from buildr_podman.interrupts import SignalGuard
from buildr_podman.lazy_session import LazySession
from buildr_podman.model import Project, RunReport, Task, TaskOutcome, TaskResult
from buildr_podman.phases import Phases, PhaseUpdate
from buildr_podman.plugins import executors
from buildr_podman.secrets import Redactor, redact, run_secret_values

if TYPE_CHECKING:
    from buildr_podman.cache.task_cache import Lookup, TaskCache
    from buildr_podman.remote_execution.tasks import RemoteExecution

__all__ = ["HookObserver", "TaskCancelled", "cache_on", "pick_executor", "run_tasks",
           "select_tasks"]

POLL_SECONDS = 0.1  # how soon the main thread notices Ctrl-C while it waits for workers
# While cancelling, stop again this often: a container that came up after the last stop
# (its agent may not handle SIGTERM yet, so removing its pod would wait 10 s) is caught too.
RESTOP_SECONDS = 0.5


class TaskCancelled(BaseException):
    """Raised into a worker by its observer once the run is cancelled (control flow, like
    KeyboardInterrupt: no `except Exception` on the way may swallow it)."""


class HookObserver:
    """Fans run events out to every plugin's hooks, one call at a time, from any thread.

    Every executor's output and notes pass through here, so this is where the values of every
    task's `secret_environment` are masked, in every task's output: no hook ever sees them.
    """

    def __init__(self, pm: pluggy.PluginManager, secrets: tuple[str, ...] = ()) -> None:
        self._hook = pm.hook
        self.secrets = secrets  # every secret value of the run (run_secret_values)
        self._lock = threading.Lock()
        self.cancelled = threading.Event()
        self._redactors: dict[tuple[str, str], Redactor] = {}
        self._removing: dict[tuple[str, str], str] = {}

    def call(self, name: str, **kwargs: Any) -> None:
        with self._lock:
            getattr(self._hook, name)(**kwargs)

    def output(self, task: Task, stream: str, data: bytes) -> None:
        if self.secrets:
            key = (task.name, stream)
            data = self._redactors.setdefault(key, Redactor(self.secrets)).feed(data)
        if data:
            self.call("buildr_task_output", task=task, stream=stream, data=data)
        self._check()

    def flush_output(self, task: Task) -> None:
        """The output held back while it might have been the start of a secret value."""
        for stream in ("stdout", "stderr"):
            redactor = self._redactors.pop((task.name, stream), None)
            rest = redactor.flush() if redactor else b""
            if rest:
                self.call("buildr_task_output", task=task, stream=stream, data=rest)

    def warn(self, task: Task, message: str) -> None:
        """A line the user sees without -v, masked like the rest."""
        self.call("buildr_task_warning", task=task,
                  message=printable(redact(message, self.secrets)))

    def log(self, task: Task, message: str) -> None:
        self.note(task, message)
        self._check()

    def note(self, task: Task, message: str) -> None:
        """A log line of the runner's own, masked like the task's; no cancellation check (it
        may come after the task ended)."""
        self.call("buildr_task_log", task=task,
                  message=printable(redact(message, self.secrets), keep="\n"))

    def phase(self, task: Task, update: PhaseUpdate) -> None:
        """A long phase of the task (phases.py); no cancellation check: it may be the removal
        of the task's pod, which must run to its end."""
        key = (task.name, update.title)
        with self._lock:
            if update.name == "remove_pod" and update.state == "started":
                self._removing[key] = f"{update.title} (of task {task.name})"
            elif update.state == "finished":
                self._removing.pop(key, None)
        self.call("buildr_task_phase", task=task, phase=update)

    def removing(self) -> list[str]:
        """The pod removals under way that have been said (phase "remove_pod")."""
        with self._lock:
            return list(self._removing.values())

    def _check(self) -> None:
        if self.cancelled.is_set():
            raise TaskCancelled


def select_tasks(project: Project, names: Sequence[str]) -> list[Task]:
    """The named tasks in the order given (none: `buildr { default }`); an unknown name, or a
    module among them or their dependencies that cannot run, is a configuration error."""
    import difflib

    every = sorted({*project.tasks, *project.unavailable})
    if not names:
        names = project.default
    if not names:
        raise ConfigError(f"name the modules to run: buildr-podman run NAME... (modules: "
                          f"{', '.join(every) or 'none'}), or set buildr {{ default = "
                          f'["NAME"] }} in {project.root}/.buildr')
    for name in names:
        if name not in every:
            close = difflib.get_close_matches(name, every, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"no task named {name!r}{hint} in {project.root}/.buildr "
                              f"(tasks: {', '.join(every) or 'none'})")
    _check_available(project, names)
    return [project.tasks[name] for name in dict.fromkeys(names)]


def _check_available(project: Project, names: Sequence[str]) -> None:
    """The first module among `names` and their dependencies that cannot run, as an error."""
    needed_by: dict[str, str] = {}
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in project.unavailable:
            via = f" (needed by {needed_by[name]})" if name in needed_by else ""
            raise ConfigError(f"{name} cannot run{via}: {project.unavailable[name]}")
        for dependency in project.tasks[name].depends_on if name in project.tasks else ():
            if dependency not in needed_by:
                needed_by[dependency] = name
                stack.append(dependency)


def pick_executor(pm: pluggy.PluginManager, name: str) -> Executor:
    found = executors(pm)
    if name not in found:
        available = ", ".join(sorted(found)) or "none: is buildr-podman installed?"
        raise UsageError(f"no executor named {name!r} (available: {available})")
    return found[name]


def run_tasks(pm: pluggy.PluginManager, project: Project, tasks: Sequence[Task],
              executor_name: str = "podman", *, jobs: int = 1,
              keep_going: bool = False, use_cache: bool = True) -> RunReport:
    """Runs `tasks` and everything they depend on; returns every module's outcome.

    With the Podman executor, a task whose key is in the task cache is served from it (not
    with `use_cache` False: then every task runs, and successes are still stored), and the
    executor's session opens only when a task runs (cache/)."""
    executor = pick_executor(pm, executor_name)
    plan = Plan({name: task.depends_on for name, task in project.tasks.items()},
                [task.name for task in tasks], keep_going=keep_going,
                tolerated=[name for name, task in project.tasks.items()
                           if task.continue_on_error])
    session = LazySession(executor, project)
    if _every_task_runs_here(project, executor_name, use_cache):
        # No reason to wait for the first key: the session opens, and the first task's pod
        # starts, while the cache is made and the task keyed.
        first = project.tasks.get(plan.order[0]) if plan.order else None
        session.open_early(first)
    try:
        return _run_with(session, pm, project, plan, executor, executor_name, jobs, use_cache)
    finally:
        session.close()


def _run_with(session: LazySession, pm: pluggy.PluginManager, project: Project, plan: Plan,
              executor: Executor, executor_name: str, jobs: int, use_cache: bool) -> RunReport:
    from buildr_podman.output.tasklog import TaskLogs

    logs = TaskLogs(project)
    pm.register(logs, name="task-logs")
    cache = _task_cache(project, executor_name, use_cache,
                        [project.tasks[name].container.image for name in plan.order
                         if name in project.tasks])
    remote = _remote_execution(project, cache, use_cache)
    try:
        with SignalGuard() as guard:
            run = _Run(pm, project, plan, executor_name, max(1, jobs), guard, cache, remote)
            if cache is None:
                with ExitStack() as opened:
                    guard.raising = True  # opening cleans up by itself: let Ctrl-C interrupt it
                    eager = opened.enter_context(executor.open_session(project))
                    guard.raising = False
                    return run.execute(eager, opened.close)
            return _run_lazily(session, run)
    finally:
        if remote is not None:
            remote.close()
        if cache is not None:
            cache.close()
        pm.unregister(logs)
        logs.close()


def _every_task_runs_here(project: Project, executor_name: str, use_cache: bool) -> bool:
    """Every task will run on this machine (--no-cache with the task cache on: no key is
    read, so no task is a hit; no remote execution)."""
    return (executor_name == "podman" and not use_cache and cache_on()
            and project.remote_execution is None)


def cache_on() -> bool:
    """BUILDR_CACHE=off turns the task cache off whole: nothing read, nothing stored (the
    tests of running)."""
    return os.environ.get("BUILDR_CACHE") != "off"


def _task_cache(project: Project, executor_name: str, use_cache: bool,
                images: list[str]) -> TaskCache | None:
    """The cache keys a task by its image's content id, which only Podman's images have: the
    ids of the run's `images` are asked at once, before the cache's own imports."""
    if executor_name != "podman" or not cache_on():
        return None
    from buildr_podman.cache.image_ids import ImageIds

    # A run whose tasks all run here started the API service first thing: ask it.
    image_ids = ImageIds(images, early_api=_every_task_runs_here(project, executor_name,
                                                                 use_cache))
    from buildr_podman.cache.task_cache import TaskCache

    try:
        return TaskCache(project, read=use_cache, image_id=image_ids)
    except BaseException:
        image_ids.close()
        raise


def _remote_execution(project: Project, cache: TaskCache | None,
                      use_cache: bool) -> RemoteExecution | None:
    """Where the tasks run, with `buildr { remote }` or `run --remote` (gRPC only then)."""
    if project.remote_execution is None:
        return None
    from buildr_podman.remote_execution.tasks import RemoteExecution

    return RemoteExecution.for_run(project, cache, use_cache)


def _run_lazily(session: LazySession, run: _Run) -> RunReport:
    try:
        report = run.execute(session, session.close)
    finally:
        session.close()
    if session.failure is not None:
        raise session.failure  # as if opening had failed first: its exit code, one line
    return report


class _Run:
    """The state of one run while the main thread schedules it."""

    def __init__(self, pm: pluggy.PluginManager, project: Project, plan: Plan,
                 executor_name: str, jobs: int, guard: SignalGuard,
                 cache: TaskCache | None = None,
                 remote: RemoteExecution | None = None) -> None:
        self.pm = pm
        self.project = project
        self.plan = plan
        self.executor_name = executor_name
        self.jobs = jobs
        self.guard = guard
        self.observer = HookObserver(pm, run_secret_values(project.tasks.values()))
        self.outcomes: dict[str, TaskOutcome] = {}
        self.running: dict[Future[TaskOutcome], Task] = {}
        self._signals_seen = 0
        self._last_stop = 0.0
        self._cancel_reason = ""  #: why the run stopped its tasks, once it did
        self.cache = cache
        self.remote = remote  #: where tasks that miss the cache run, if not here
        #: where each module's outputs of this run landed (what a dependent's key covers)
        self.landed: dict[str, Path] = {}
        self._landed_lock = threading.Lock()

    def execute(self, session: ExecutorSession, close: Callable[[], object]) -> RunReport:
        """Runs the plan in `session`, then `close`s it (its pods go) before the report: the
        run's duration is all the user waited. An error of closing is raised after the
        report, as it was found after every task had ended."""
        started = time.monotonic()
        tasks = [self.project.tasks[name] for name in self.plan.order]
        self.observer.call("buildr_run_started", project=self.project, tasks=tasks,
                           jobs=self.jobs)
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="buildr-task") as pool:
            try:
                self._schedule(pool, session)
            except BaseException:
                # A bug here must not leave workers running until their tasks end.
                self.plan.stop("cancelled: internal error")
                self._cancel("internal error")
                raise
            failure = self._close_session(pool, close)
        report = self._report(time.monotonic() - started)
        self.observer.call("buildr_run_finished", report=report)
        if failure is not None:
            raise failure
        return report

    def _close_session(self, pool: ThreadPoolExecutor,
                       close: Callable[[], object]) -> Exception | None:
        """Closes the session in a worker, and returns what it raised. Removing a pod kept
        warm can take Podman minutes (a container layer of a million files): its phase says
        so meanwhile, and this thread keeps answering Ctrl-C, to say what is going on."""
        closing = pool.submit(close)
        while True:
            try:
                closing.result(timeout=POLL_SECONDS)
                return None
            except TimeoutError:
                self._signals_while_closing()
            except Exception as exc:  # noqa: BLE001 - reported after the run's report
                return exc

    def _signals_while_closing(self) -> None:
        """Ctrl-C while the pods go: the removal is never cut short (a pod half removed is
        worse than one left whole), and the user is told how to stop at once anyway."""
        if self.guard.presses == self._signals_seen:
            return
        self._signals_seen = self.guard.presses
        what = ", ".join(self.observer.removing()) or "removing the run's pods"
        self.observer.call("buildr_run_cancelling", running=[], reason=(
            f"interrupted while {what}: the removal goes on to its end, so that nothing is "
            "left behind; to stop at once, kill -9 this process, then run buildr-podman clean "
            "to remove what is left"))

    def _schedule(self, pool: ThreadPoolExecutor, session: ExecutorSession) -> None:
        while True:
            self._check_signals()
            self._start_ready(pool, session)
            if not self.running:
                return
            done, _ = wait(self.running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                self._finished(self.running.pop(future), future.result())
            if self.running and self.observer.cancelled.is_set() \
                    and time.monotonic() - self._last_stop > RESTOP_SECONDS:
                self._stop_running()

    def _start_ready(self, pool: ThreadPoolExecutor, session: ExecutorSession) -> None:
        for name in self.plan.ready():
            if len(self.running) >= self.jobs:
                return
            self.plan.start(name)
            task = self.project.tasks[name]
            self.running[pool.submit(self._run_one, session, task)] = task

    def _finished(self, task: Task, outcome: TaskOutcome) -> None:
        self.outcomes[task.name] = outcome
        skipped = self.plan.finish(task.name, outcome.succeeded)
        self._report_skipped(skipped)
        if self.plan.stopping and self.running and not self.observer.cancelled.is_set():
            self._cancel(f"{task.name} failed, so the rest is cancelled (-k runs what does "
                         "not depend on it)")

    def _check_signals(self) -> None:
        if self.guard.presses == self._signals_seen:
            return
        first = self._signals_seen == 0
        self._signals_seen = self.guard.presses
        if first:
            self._report_skipped(self.plan.stop("cancelled: interrupted"))
            self._cancel("interrupted")
        else:
            # Again, in case a pod came up after the first stop; the clean-up still runs.
            self._cancel("interrupted again: still stopping; if this hangs, kill -9 this "
                         "process and run buildr-podman clean")

    def _cancel(self, reason: str) -> None:
        self._cancel_reason = self._cancel_reason or reason.split(",")[0]
        self.observer.cancelled.set()
        running = list(self.running.values())
        self.observer.call("buildr_run_cancelling", reason=reason, running=running)
        if running:
            self._stop_running()

    def _stop_running(self) -> None:
        self._last_stop = time.monotonic()
        try:
            self.pm.hook.buildr_cancel_running(executor_name=self.executor_name)
        except Exception:  # noqa: BLE001, S110 - the observer check still stops each task
            pass

    def _report_skipped(self, names: Sequence[str]) -> None:
        for name in names:
            reason = self.plan.reasons[name]
            self.outcomes[name] = TaskOutcome(task=name, exit_code=-1, skipped=reason)
            self.observer.call("buildr_task_skipped", task=self.project.tasks[name],
                               reason=reason)

    def _run_one(self, session: ExecutorSession, task: Task) -> TaskOutcome:
        """In a worker thread: runs one task and reports it; never raises."""
        started = time.monotonic()
        result: TaskResult | TaskOutcome | None = None
        written: tuple[Path | None, int] | None = None
        error = cache_note = ""
        try:
            self.observer.call("buildr_task_started", task=task)
            _prepare_mount_sources(self.project, task)
            # Before the task can read anything: what changes in the repository after this
            # is not what it started from (write_back refuses to overwrite it).
            started_ns = time.time_ns()
            result, cache_note = self._run_or_replay(session, task)
            if task.write_back:
                written = self._write_back(task, result, started_ns)
        except TaskCancelled:
            error = "cancelled"
        except BuildrError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug, ours or a plugin's: report it, go on
            error = f"internal error: {type(exc).__name__}: {exc}"
            self._log_quietly(task, traceback.format_exc())
        outcome = self._outcome(task, result, error, written, time.monotonic() - started,
                                cache_note)
        self._report_finished(task, outcome)
        return outcome

    def _run_or_replay(self, session: ExecutorSession, task: Task,
                       ) -> tuple[TaskResult | TaskOutcome, str]:
        """Serves the task from the cache, or runs it and stores a success there; returns the
        facts of the run (or of the replay) and what the cache said. Either way its outputs
        land in its out dir the same way, before any write_back."""
        if self.cache is None:
            ran = session.run_task(task, self.observer)
            self._landed_at(task, ran.output_dir)
            return ran, ""
        with self._landed_lock:
            landed = dict(self.landed)
        # Hashing the inputs of a big repository the first time (no stat cache yet), or asking
        # a remote cache, can take a while: said like the other long phases.
        with Phases(self.observer, task).blocking("cache_lookup", "looking up the task cache"):
            lookup = self.cache.lookup(task, landed,
                                       lambda message: self.observer.warn(task, message))
        result: TaskResult | TaskOutcome | None = None
        if lookup.entry is not None:
            result = self.cache.replay(task, lookup, self.observer)
        else:
            if lookup.note:
                self.observer.log(task, lookup.note)
            if self.remote is not None:  # None: the task must run here (said why)
                result = self.remote.run(task, lookup, landed, self.observer,
                                         lambda message: self.observer.warn(task, message),
                                         self.observer.cancelled)
        if result is not None and result.output_dir is not None \
                and isinstance(session, LazySession):
            session.outputs_landed(task, result.output_dir)  # landed without the session
        if result is None:
            result = self._run_and_record(session, task, lookup)
        self._landed_at(task, result.output_dir)
        return result, lookup.note

    def _landed_at(self, task: Task, output_dir: Path | None) -> None:
        if output_dir is not None:
            with self._landed_lock:
                self.landed[task.name] = output_dir

    def _run_and_record(self, session: ExecutorSession, task: Task,
                        lookup: Lookup) -> TaskResult | TaskOutcome:
        from buildr_podman.cache.task_cache import OutputRecorder

        assert self.cache is not None
        recorder = OutputRecorder(self.observer, self.cache.store, task)
        try:
            result = session.run_task(task, recorder)
            if lookup.key is not None and result.succeeded:
                try:
                    with Phases(self.observer, task).blocking(
                            "cache_store", "storing the outputs in the task cache"):
                        self.cache.record(task, lookup.key, result, recorder,
                                          lambda message: self.observer.warn(task, message))
                except OSError as exc:
                    self.observer.warn(task, f"not stored in the task cache: {exc}")
        finally:
            recorder.discard()
        return result

    def _outcome(self, task: Task, result: TaskResult | TaskOutcome | None, error: str,
                 written: tuple[Path | None, int] | None, waited: float,
                 cache_note: str = "") -> TaskOutcome:
        """The task's outcome, made once: the backend's facts (none when it raised), where
        write_back put the changes, the time the user waited, and whether the run's
        cancellation is what ended it."""
        facts: dict[str, Any] = ({f.name: getattr(result, f.name) for f in fields(TaskResult)}
                                 if result is not None and not error else {"exit_code": -1})
        if written is not None:
            facts["output_dir"], facts["files_returned"] = written
        facts["duration_seconds"] = waited  # pod start and landing included: what one waits
        # One line, whatever raised it: a Podman error's explanation can span several. Its
        # controls escaped: it may quote what a task chose (a member name, the agent's error).
        error = printable(" ".join(redact(error or str(facts.pop("error", "")),
                                          self.observer.secrets).split()))
        succeeded = facts["exit_code"] == 0 and not error and not facts.get("timed_out")
        cancelled = self.observer.cancelled.is_set() and not succeeded
        if cancelled and error and error != "cancelled":
            # The run killed its container: the error it saw ("killed from outside") is what
            # that looks like from inside, not what happened.
            error = f"cancelled ({self._cancel_reason}): buildr-podman stopped its container"
        return TaskOutcome(task=task.name, error=error, cancelled=cancelled,
                           cached=getattr(result, "cached", False), cache_note=cache_note,
                           **facts)

    def _write_back(self, task: Task, result: TaskResult | TaskOutcome,
                    started_ns: int) -> tuple[Path | None, int] | None:
        """Applies a successful task's changes to the repository instead of its out dir;
        returns where they went (None when nothing reached it) and how many paths, or None
        when nothing was written back."""
        if result.output_dir is None:
            return None
        if not result.succeeded:
            self._log_quietly(task, f"not written back because the task failed; its changes "
                              f"are in {result.output_dir}")
            return None
        out_dir = self.project.out_dir
        protected = (".buildr", *([out_dir.relative_to(self.project.root).as_posix()]
                                  if out_dir.is_relative_to(self.project.root) else []))
        deleted = self._deletions_to_write_back(task, result.deleted_paths)
        phase = Phases(self.observer, task).start("write_back", "writing back", unit="paths")
        try:
            stats = write_back(self.project.root, task.input_mapping, result.output_dir,
                               deleted, protected, started_ns, phase)
        finally:
            phase.finish()
        self._log_quietly(task, f"wrote back {stats.written} paths and deleted {stats.deleted} "
                          "in the repository")
        for rel in stats.skipped:
            self._log_quietly(task, f"not written back (outside every input mapping): {rel}")
        if stats.protected:
            shown = ", ".join(repr(rel) for rel in stats.protected[:5])
            more = f" and {len(stats.protected) - 5} more" if len(stats.protected) > 5 else ""
            self.observer.warn(task, (
                f"not written back: {len(stats.protected)} changes inside .buildr/ or the out "
                f"dir, which a task never changes ({shown}{more})"))
        # What the summary says came back is what reached the repository: nothing, if every
        # path was outside the input mappings.
        changed = stats.written or stats.deleted
        return (self.project.root if changed else None), stats.written

    def _deletions_to_write_back(self, task: Task, deleted: Sequence[str]) -> list[str]:
        """The task's deletions but those of what an inputs_from layer laid over the
        repository's own entry: the task deleted the dependency's output, never the file
        beneath it, which stays (said once)."""
        with self._landed_lock:
            layers = [self.landed[name] for name in task.inputs_from if name in self.landed]
        spared = set(laid_over_by_layers(deleted, layers, self.project.root,
                                         task.input_mapping)) if layers else set()
        if spared:
            shown = ", ".join(repr(rel) for rel in sorted(spared)[:5])
            more = f" and {len(spared) - 5} more" if len(spared) > 5 else ""
            self.observer.warn(task, (
                f"not deleted in the repository: {len(spared)} paths the task deleted were "
                f"outputs laid by inputs_from over the repository's own ({shown}{more}), "
                "which the task never saw"))
        return [rel for rel in deleted if rel not in spared]

    def _report_finished(self, task: Task, outcome: TaskOutcome) -> None:
        try:
            self.observer.flush_output(task)
            if outcome.output_dir is not None and outcome.output_dir.is_dir():
                self.observer.call("buildr_task_files_returned", task=task, outcome=outcome)
            self.observer.call("buildr_task_finished", task=task, outcome=outcome)
        except Exception as exc:  # noqa: BLE001 - an observer's bug must not lose the outcome
            self._log_quietly(task, f"an observer failed: {type(exc).__name__}: {exc}")

    def _log_quietly(self, task: Task, message: str) -> None:
        try:
            self.observer.note(task, message)
        except Exception:  # noqa: BLE001, S110 - the observer that broke may be the one called
            pass

    def _report(self, duration: float) -> RunReport:
        outcomes = []
        for name in self.plan.order:
            outcome = self.outcomes.get(name)
            if outcome is None:  # never started and never skipped: only after a bug
                outcome = TaskOutcome(task=name, exit_code=-1, skipped="not run")
            outcomes.append(outcome)
        tolerated = tuple(o.task for o in outcomes if not o.succeeded and not o.skipped
                          and self.project.tasks[o.task].continue_on_error
                          and not o.cancelled)
        if self.guard.signal_number is not None:
            exit_code = self.guard.exit_code
        elif all(o.succeeded or o.task in tolerated for o in outcomes):
            exit_code = 0
        else:
            exit_code = 1
        return RunReport(outcomes=outcomes, duration_seconds=duration, exit_code=exit_code,
                         interrupted=self.guard.signal_number is not None, tolerated=tolerated)


def _prepare_mount_sources(project: Project, task: Task) -> None:
    """Creates bind-mount sources inside the out dir: a dependency may have returned nothing.
    Each is reached from the repository root without following a symlink: a directory a task
    returned must not turn a mount into one of a place outside."""
    for mount in task.container.bind_mounts:
        if not mount.source.is_relative_to(project.out_dir):
            continue
        try:
            os.close(open_directory_beneath(project.root,
                                            mount.source.relative_to(project.root).parts,
                                            create=True))
        except OSError as exc:
            raise BuildrError(f"task {task.name!r}: cannot use bind_mount source {mount.source}: "
                              f"{exc.filename!r} on the way is "
                              + ("a symlink or file, which is never followed"
                                 if exc.errno in (errno.ELOOP, errno.ENOTDIR)
                                 else exc.strerror or "unusable")) from exc
