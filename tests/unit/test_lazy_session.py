"""The executor session a cached run may never need: opened by the first task that runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from buildr_podman.errors import BackendError
from buildr_podman.lazy_session import LazySession
from buildr_podman.model import ContainerSpec, Project, Task, TaskOutcome


class Recording:
    name = "recording"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.opened = 0
        self.closed = 0
        self.landed: list[tuple[str, Path]] = []

    @contextmanager
    def open_session(self, project: Project) -> Iterator[Recording]:
        self.opened += 1
        if self.fail:
            raise BackendError("podman cannot start here")
        try:
            yield self
        finally:
            self.closed += 1

    def run_task(self, task: Task, observer: Any) -> TaskOutcome:
        return TaskOutcome(task=task.name, exit_code=0)

    def outputs_landed(self, task: Task, output_dir: Path) -> None:
        self.landed.append((task.name, output_dir))


def task(name: str) -> Task:
    return Task(name=name, module_type="script", container=ContainerSpec(image="i"),
                script="true")


def test_nothing_opens_until_a_task_runs(tmp_path: Path) -> None:
    executor = Recording()
    session = LazySession(executor, Project(root=tmp_path, out_dir=tmp_path / "out"))
    session.outputs_landed(task("hit"), tmp_path / "out" / "hit")
    session.close()
    assert executor.opened == 0 and not session.opened


def test_the_first_run_opens_once_and_learns_what_hits_landed(tmp_path: Path) -> None:
    executor = Recording()
    session = LazySession(executor, Project(root=tmp_path, out_dir=tmp_path / "out"))
    session.outputs_landed(task("hit"), tmp_path / "hit")
    assert session.run_task(task("a"), None).succeeded
    session.outputs_landed(task("later"), tmp_path / "later")
    session.run_task(task("b"), None)
    session.close()
    assert (executor.opened, executor.closed) == (1, 1)
    assert executor.landed == [("hit", tmp_path / "hit"), ("later", tmp_path / "later")]


def test_a_failure_to_open_fails_every_task_with_it_and_is_kept(tmp_path: Path) -> None:
    executor = Recording(fail=True)
    session = LazySession(executor, Project(root=tmp_path, out_dir=tmp_path / "out"))
    for name in ("a", "b"):
        with pytest.raises(BackendError, match="cannot start"):
            session.run_task(task(name), None)
    assert executor.opened == 1
    assert isinstance(session.failure, BackendError)


def test_opening_early_opens_once_in_the_background_and_close_waits_for_it(
        tmp_path: Path) -> None:
    executor = Recording()
    session = LazySession(executor, Project(root=tmp_path, out_dir=tmp_path / "out"))
    session.open_early()
    assert session.run_task(task("a"), None).succeeded  # waits for the background open
    session.run_task(task("b"), None)
    session.close()
    assert (executor.opened, executor.closed) == (1, 1)


def test_a_session_opened_early_and_never_used_is_closed(tmp_path: Path) -> None:
    executor = Recording()
    session = LazySession(executor, Project(root=tmp_path, out_dir=tmp_path / "out"))
    session.open_early()
    session.close()  # e.g. Ctrl-C before the first task: the open finishes, then closes
    assert (executor.opened, executor.closed) == (1, 1)


def test_an_early_failure_to_open_is_raised_by_the_first_task(tmp_path: Path) -> None:
    executor = Recording(fail=True)
    session = LazySession(executor, Project(root=tmp_path, out_dir=tmp_path / "out"))
    session.open_early()
    with pytest.raises(BackendError, match="cannot start"):
        session.run_task(task("a"), None)
    session.close()
    assert executor.opened == 1


class Prestarting(Recording):
    """A session that can start a task's pod ahead (PodmanSession.prestart), slowly enough to
    show a task that looks for its pod before the reservation: run_task fails then."""

    def __init__(self) -> None:
        super().__init__()
        self.opening = threading.Event()
        self.reserved: list[str] = []
        self.started: list[str] = []

    @contextmanager
    def open_session(self, project: Project) -> Iterator[Recording]:
        self.opening.set()
        time.sleep(0.01)  # the task comes meanwhile, and waits for the opening
        with super().open_session(project) as session:
            yield session

    def prestart(self, task: Task) -> Any:
        time.sleep(0.01)  # a task let in before the reservation would look now
        self.reserved.append(task.name)
        return lambda: self.started.append(task.name)

    def run_task(self, task: Task, observer: Any) -> TaskOutcome:
        return TaskOutcome(task=task.name, exit_code=0 if task.name in self.reserved else 1)


def test_opening_early_reserves_the_first_tasks_pod_before_any_task_can_run(
        tmp_path: Path) -> None:
    executor = Prestarting()
    session = LazySession(executor, Project(root=tmp_path, out_dir=tmp_path / "out"))
    session.open_early(task("first"))
    assert executor.opening.wait(5)
    assert session.run_task(task("first"), None).succeeded
    session.close()
    assert executor.started == ["first"] and executor.opened == 1
