"""The runner with a fake executor: order, parallelism, cancellation, keep-going, Ctrl-C, logs."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from buildr_podman.errors import BuildrError
from buildr_podman.hookspecs import hookimpl
from buildr_podman.model import BindMount, ContainerSpec, Project, RunReport, Task, TaskOutcome
from buildr_podman.phases import THRESHOLD_VARIABLE, Phases, PhaseUpdate
from buildr_podman.plugins import make_plugin_manager
from buildr_podman.runner import run_tasks

Behaviour = Callable[[Task, Any, "FakeExecutor"], TaskOutcome]


class FakeExecutor:
    """Runs each task by its behaviour, in the worker thread; records what happened."""

    name = "fake"

    def __init__(self, project: Project, behaviours: dict[str, Behaviour]) -> None:
        self.project = project
        self.behaviours = behaviours
        self.stop = threading.Event()  # set by buildr_cancel_running
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0
        self.events: list[str] = []
        self.on_close: Callable[[], None] | None = None  #: what closing the session does

    @contextmanager
    def open_session(self, project: Project) -> Iterator[FakeExecutor]:
        try:
            yield self
        finally:
            if self.on_close is not None:
                self.on_close()

    def run_task(self, task: Task, observer: Any) -> TaskOutcome:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.events.append(f"start {task.name}")
        try:
            return self.behaviours.get(task.name, ok)(task, observer, self)
        finally:
            with self.lock:
                self.running -= 1
                self.events.append(f"end {task.name}")


def ok(task: Task, observer: Any, executor: FakeExecutor) -> TaskOutcome:
    observer.output(task, "stdout", f"hello from {task.name}\n".encode())
    time.sleep(0.05)
    out = executor.project.out_dir / task.name
    out.mkdir(parents=True, exist_ok=True)
    return TaskOutcome(task=task.name, exit_code=0, files_returned=1, output_dir=out)


def fail(task: Task, observer: Any, executor: FakeExecutor) -> TaskOutcome:
    observer.output(task, "stderr", b"it broke\n")
    return TaskOutcome(task=task.name, exit_code=2)


def blocks(task: Task, observer: Any, executor: FakeExecutor) -> TaskOutcome:
    """Silent until stopped, like `sleep 600` in a container: only the cancel hook ends it."""
    if executor.stop.wait(10):
        raise BuildrError("the agent stopped mid-task")
    return TaskOutcome(task=task.name, exit_code=0)


def blocks_then_cleans_up(task: Task, observer: Any, executor: FakeExecutor) -> TaskOutcome:
    """Like `blocks`, but removing its pod takes a moment after the stop."""
    try:
        return blocks(task, observer, executor)
    finally:
        time.sleep(0.4)


def chatty(task: Task, observer: Any, executor: FakeExecutor) -> TaskOutcome:
    """Keeps logging; an executor without a cancel hook is stopped at its next event."""
    for _ in range(200):
        observer.log(task, "still working")
        time.sleep(0.02)
    return TaskOutcome(task=task.name, exit_code=0)


class Recorder:
    """A plugin: the fake executor, its cancel hook, and every run event in order."""

    def __init__(self, executor: FakeExecutor, cancel_hook: bool = True) -> None:
        self.executor = executor
        self.cancel_hook = cancel_hook
        self.events: list[str] = []
        self.report: RunReport | None = None

    @hookimpl
    def buildr_executors(self) -> list[Any]:
        return [self.executor]

    @hookimpl
    def buildr_cancel_running(self, executor_name: str) -> None:
        if self.cancel_hook and executor_name == "fake":
            self.executor.stop.set()

    @hookimpl
    def buildr_run_started(self, project: Project, tasks: list[Task], jobs: int) -> None:
        self.events.append(f"run_started {[t.name for t in tasks]} jobs={jobs}")

    @hookimpl
    def buildr_task_started(self, task: Task) -> None:
        self.events.append(f"started {task.name}")

    @hookimpl
    def buildr_task_files_returned(self, task: Task, outcome: TaskOutcome) -> None:
        self.events.append(f"files {task.name}")

    @hookimpl
    def buildr_task_finished(self, task: Task, outcome: TaskOutcome) -> None:
        self.events.append(f"finished {task.name} {outcome.status}")

    @hookimpl
    def buildr_task_skipped(self, task: Task, reason: str) -> None:
        self.events.append(f"skipped {task.name}: {reason}")

    @hookimpl
    def buildr_run_cancelling(self, reason: str, running: list[Task]) -> None:
        self.events.append(f"cancelling: {reason}")

    @hookimpl
    def buildr_task_phase(self, task: Task, phase: PhaseUpdate) -> None:
        self.events.append(f"phase {task.name} {phase.name} {phase.state}")

    @hookimpl
    def buildr_run_finished(self, report: RunReport) -> None:
        self.events.append("run_finished")
        self.report = report


def project_of(tmp_path: Path, deps: dict[str, list[str]], tolerated: tuple[str, ...] = (),
               **extra: Any) -> Project:
    tasks = {name: Task(**{"name": name, "module_type": "script",
                           "container": ContainerSpec(image="i"), "script": "true",
                           "depends_on": tuple(needs), "continue_on_error": name in tolerated,
                           **extra.get(name, {})})
             for name, needs in deps.items()}
    return Project(root=tmp_path, out_dir=tmp_path / "out", tasks=tasks)


def run(project: Project, targets: list[str], behaviours: dict[str, Behaviour], *,
        jobs: int = 4, keep_going: bool = False, cancel_hook: bool = True,
        on_close: Callable[[FakeExecutor, Recorder], None] | None = None,
        ) -> tuple[RunReport, Recorder]:
    executor = FakeExecutor(project, behaviours)
    recorder = Recorder(executor, cancel_hook)
    if on_close is not None:
        executor.on_close = lambda: on_close(executor, recorder)
    pm = make_plugin_manager()
    pm.register(recorder, name="recorder")
    report = run_tasks(pm, project, [project.tasks[t] for t in targets], "fake", jobs=jobs,
                       keep_going=keep_going)
    assert recorder.report is report
    return report, recorder


DEPS = {"lib": [], "app": ["lib"], "test": ["lib"], "deploy": ["app", "test"], "docs": []}


def statuses(report: RunReport) -> dict[str, str]:
    return {o.task: o.status for o in report.outcomes}


def test_dependencies_finish_before_dependents_start(tmp_path: Path) -> None:
    report, recorder = run(project_of(tmp_path, DEPS), ["deploy"], {})
    assert report.exit_code == 0
    assert [o.task for o in report.outcomes] == ["lib", "app", "test", "deploy"]
    events = recorder.executor.events
    assert events.index("end lib") < events.index("start app")
    assert events.index("end app") < events.index("start deploy")
    assert events.index("end test") < events.index("start deploy")
    assert recorder.events[0] == "run_started ['lib', 'app', 'test', 'deploy'] jobs=4"
    assert "files lib" in recorder.events
    assert recorder.events.index("files lib") < recorder.events.index("finished lib ok")


def test_independent_modules_run_in_parallel_up_to_jobs(tmp_path: Path) -> None:
    slow = {name: _sleeper(0.3) for name in "abcd"}
    project = project_of(tmp_path, {name: [] for name in "abcd"})
    started = time.monotonic()
    report, recorder = run(project, list("abcd"), slow, jobs=4)
    assert recorder.executor.most_at_once == 4
    assert time.monotonic() - started < 1.0, "four 0.3 s tasks at once, not one after another"
    _, recorder = run(project, list("abcd"), slow, jobs=2)
    assert recorder.executor.most_at_once == 2
    _, recorder = run(project, list("abcd"), {}, jobs=1)
    assert recorder.executor.most_at_once == 1
    assert report.exit_code == 0


def _sleeper(seconds: float) -> Behaviour:
    def behaviour(task: Task, observer: Any, executor: FakeExecutor) -> TaskOutcome:
        time.sleep(seconds)
        return TaskOutcome(task=task.name, exit_code=0)
    return behaviour


def test_a_failure_cancels_running_tasks_and_skips_the_rest(tmp_path: Path) -> None:
    project = project_of(tmp_path, {"slow": [], "bad": [], "after": ["bad"], "later": []})
    started = time.monotonic()
    report, recorder = run(project, ["slow", "bad", "after", "later"],
                           {"slow": blocks, "bad": fail}, jobs=2)
    assert time.monotonic() - started < 3, "the blocked task was stopped, not waited for"
    assert report.exit_code == 1
    assert statuses(report) == {"slow": "cancelled", "bad": "failed", "after": "skipped",
                                "later": "skipped"}
    assert report.outcomes[[o.task for o in report.outcomes].index("slow")].error == (
        "cancelled (bad failed): buildr-podman stopped its container")
    assert "skipped after: dependency bad failed" in recorder.events
    assert "skipped later: cancelled: bad failed" in recorder.events
    assert any(e.startswith("cancelling: bad failed") for e in recorder.events)


def test_keep_going_runs_what_does_not_depend_on_the_failure(tmp_path: Path) -> None:
    report, _ = run(project_of(tmp_path, DEPS), ["deploy", "docs"], {"test": fail},
                    keep_going=True, jobs=1)
    assert report.exit_code == 1
    assert statuses(report) == {"lib": "ok", "app": "ok", "test": "failed",
                                "deploy": "skipped", "docs": "ok"}


def test_continue_on_error_lets_dependents_run_and_the_run_pass(tmp_path: Path) -> None:
    report, _ = run(project_of(tmp_path, DEPS, tolerated=("test",)), ["deploy"],
                    {"test": fail})
    assert statuses(report)["deploy"] == "ok"
    assert report.tolerated == ("test",)
    assert report.exit_code == 0


def test_ctrl_c_stops_running_tasks_and_exits_130(tmp_path: Path) -> None:
    # Whatever the suite started with (SIGINT is ignored under nohup or in a background job),
    # the run handles Ctrl-C itself, then puts back what was there before.
    before = signal.getsignal(signal.SIGINT)
    project = project_of(tmp_path, {"a": [], "b": [], "c": ["a"]})

    def interrupt_twice() -> None:
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while stopping changes nothing

    interrupter = threading.Thread(target=interrupt_twice, daemon=True)
    interrupter.start()
    started = time.monotonic()
    report, recorder = run(project, ["a", "b", "c"],
                           {"a": blocks_then_cleans_up, "b": blocks_then_cleans_up})
    interrupter.join()
    assert time.monotonic() - started < 3
    assert sum(e.startswith("cancelling: interrupted") for e in recorder.events) == 2
    assert report.exit_code == 130 and report.interrupted
    assert statuses(report) == {"a": "cancelled", "b": "cancelled", "c": "skipped"}
    # Not what the stopped agent's connection looked like ("killed from outside"): the run did.
    assert {o.error for o in report.outcomes if o.task != "c"} == {
        "cancelled (interrupted): buildr-podman stopped its container"}
    assert recorder.executor.running == 0, "every task returned before the run did"
    assert signal.getsignal(signal.SIGINT) is before, "handler restored"


def test_without_a_cancel_hook_a_task_stops_at_its_next_event(tmp_path: Path) -> None:
    project = project_of(tmp_path, {"bad": [], "chatty": []})
    started = time.monotonic()
    report, _ = run(project, ["bad", "chatty"], {"bad": _late(fail), "chatty": chatty},
                    cancel_hook=False)
    assert time.monotonic() - started < 2
    assert statuses(report) == {"bad": "failed", "chatty": "cancelled"}


def _late(behaviour: Behaviour) -> Behaviour:
    def later(task: Task, observer: Any, executor: FakeExecutor) -> TaskOutcome:
        time.sleep(0.2)
        return behaviour(task, observer, executor)
    return later


def test_a_backend_error_or_a_bug_fails_one_task_not_the_run(tmp_path: Path) -> None:
    def backend_error(task: Task, observer: Any, executor: FakeExecutor) -> TaskOutcome:
        raise BuildrError("image 'x' is not here")

    def bug(task: Task, observer: Any, executor: FakeExecutor) -> TaskOutcome:
        raise KeyError("oops")

    report, _ = run(project_of(tmp_path, {"a": [], "b": [], "c": []}), ["a", "b", "c"],
                    {"a": backend_error, "b": bug}, keep_going=True, jobs=1)
    outcomes = {o.task: o for o in report.outcomes}
    assert outcomes["a"].error == "image 'x' is not here"
    assert outcomes["b"].error == "internal error: KeyError: 'oops'"
    assert outcomes["c"].status == "ok" and report.exit_code == 1
    assert "Traceback" in (tmp_path / "out" / ".logs" / "b.log").read_text()


def test_each_task_keeps_its_full_log(tmp_path: Path) -> None:
    run(project_of(tmp_path, {"lib": [], "bad": []}), ["lib", "bad"], {"bad": fail},
        keep_going=True)
    log = (tmp_path / "out" / ".logs" / "lib.log").read_text().splitlines()
    assert log[0].startswith("# buildr: task lib (script) in i, started ")
    assert log[1] == "hello from lib"
    assert re.fullmatch(r"# buildr: lib ok in \d+\.\d s", log[2])
    bad = (tmp_path / "out" / ".logs" / "bad.log").read_text()
    assert "it broke\n# buildr: bad failed with exit code 2 in " in bad


def test_mount_sources_in_the_out_dir_are_created(tmp_path: Path) -> None:
    source = tmp_path / "out" / "lib"
    mount = BindMount(source=source, target="/deps", read_only=True)
    project = project_of(tmp_path, {"app": []},
                         app={"container": ContainerSpec(image="i", bind_mounts=(mount,))})
    seen = []

    def check(task: Task, observer: Any, executor: FakeExecutor) -> TaskOutcome:
        seen.append(source.is_dir())
        return TaskOutcome(task=task.name, exit_code=0)

    run(project, ["app"], {"app": check})
    assert seen == [True]


def test_an_unknown_executor_is_one_clear_error(tmp_path: Path) -> None:
    pm = make_plugin_manager()
    project = project_of(tmp_path, {"a": []})
    with pytest.raises(BuildrError, match=r"no executor named 'nope' \(available: podman\)"):
        run_tasks(pm, project, [project.tasks["a"]], "nope")


def test_sigterm_stops_the_run_like_ctrl_c_and_exits_143(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    project = project_of(tmp_path, {"a": []})
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    report, _ = run(project, ["a"], {"a": blocks})
    timer.join()
    assert report.exit_code == 143 and statuses(report) == {"a": "cancelled"}
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_write_back_that_reached_nothing_claims_no_files(tmp_path: Path) -> None:
    """Every returned path outside the input mappings: the summary said "1 files back in .",
    where nothing in the repository had changed."""
    (tmp_path / "src").mkdir()
    project = project_of(tmp_path, {"fmt": [], "gen": []},
                         fmt={"write_back": True, "input_mapping": (("src", "src"),)},
                         gen={"write_back": True, "input_mapping": (("src", "src"),)})

    def returns(rel: str) -> Behaviour:
        def behaviour(task: Task, observer: Any, executor: FakeExecutor) -> TaskOutcome:
            out = project.out_dir / task.name
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_text("x\n")
            return TaskOutcome(task=task.name, exit_code=0, output_dir=out, files_returned=1,
                               bytes_returned=2)
        return behaviour

    report, _ = run(project, ["fmt", "gen"], {"fmt": returns("elsewhere/f"),
                                              "gen": returns("src/g")})
    outcomes = {o.task: o for o in report.outcomes}
    assert (outcomes["fmt"].output_dir, outcomes["fmt"].files_returned) == (None, 0)
    assert (outcomes["gen"].output_dir, outcomes["gen"].files_returned) == (tmp_path, 1)
    assert (tmp_path / "src" / "g").read_text() == "x\n"


def keeps_its_observer(task: Task, observer: Any, executor: FakeExecutor) -> TaskOutcome:
    """Like a Podman session, which keeps a warm pod with its last task's observer."""
    executor.kept = Phases(observer, task)  # type: ignore[attr-defined]
    return ok(task, observer, executor)


def test_removing_the_pods_at_the_end_is_part_of_the_run_and_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THRESHOLD_VARIABLE, "0")

    def remove_pod(executor: FakeExecutor, recorder: Recorder) -> None:
        with executor.kept.blocking("remove_pod", "removing pod p"):  # type: ignore[attr-defined]
            time.sleep(0.3)  # what Podman takes to remove a layer of a million files
        recorder.events.append("session closed")

    report, recorder = run(project_of(tmp_path, {"a": []}), ["a"], {"a": keeps_its_observer},
                           on_close=remove_pod)
    assert recorder.events[-5:] == [
        "finished a ok", "phase a remove_pod started", "phase a remove_pod finished",
        "session closed", "run_finished"]
    assert report.duration_seconds >= 0.3, "the run's time covers the removal"
    assert report.exit_code == 0


def test_ctrl_c_while_the_pods_go_says_what_is_left_and_lets_the_removal_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THRESHOLD_VARIABLE, "0")
    removed = threading.Event()

    def interrupted_removal(executor: FakeExecutor, recorder: Recorder) -> None:
        with executor.kept.blocking("remove_pod", "removing pod p"):  # type: ignore[attr-defined]
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # until the main thread has answered the Ctrl-C
                if any(e.startswith("cancelling") for e in recorder.events):
                    break
                time.sleep(0.01)
        removed.set()

    report, recorder = run(project_of(tmp_path, {"a": []}), ["a"], {"a": keeps_its_observer},
                           on_close=interrupted_removal)
    assert removed.is_set(), "the removal was not cut short"
    said = [e for e in recorder.events if e.startswith("cancelling")]
    assert len(said) == 1
    assert "removing pod p (of task a)" in said[0] and "buildr-podman clean" in said[0]
    assert report.exit_code == 130 and report.interrupted
    assert report.outcomes[0].status == "ok"


def test_an_error_removing_the_pods_comes_after_the_report(tmp_path: Path) -> None:
    def fails(executor: FakeExecutor, recorder: Recorder) -> None:
        raise BuildrError("cannot remove the pod: run buildr-podman clean")

    executor = FakeExecutor(project_of(tmp_path, {"a": []}), {})
    executor.on_close = lambda: fails(executor, recorder)
    recorder = Recorder(executor)
    pm = make_plugin_manager()
    pm.register(recorder, name="recorder")
    with pytest.raises(BuildrError, match="cannot remove the pod"):
        run_tasks(pm, executor.project, [executor.project.tasks["a"]], "fake")
    assert recorder.events[-1] == "run_finished"
