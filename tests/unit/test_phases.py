"""Long phases: said only past the threshold, then throttled, always ended; with a fake clock."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from buildr_podman.model import ContainerSpec, Task
from buildr_podman.phases import THRESHOLD_VARIABLE, Phase, Phases, PhaseUpdate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def phase(clock: Clock, updates: list[PhaseUpdate], threshold: float = 1.0,
          interval: float = 0.5, **kwargs: Any) -> Phase:
    return Phase(updates.append, "extract_outputs", "extracting outputs", unit="files",
                 clock=clock, threshold=threshold, interval=interval, **kwargs)


def test_a_phase_shorter_than_the_threshold_says_nothing_at_all() -> None:
    clock, updates = Clock(), []
    work = phase(clock, updates)
    for _ in range(1000):
        work.advance(1, 10)
        clock.now += 0.0009
    work.finish()
    assert updates == []
    assert (work.done, work.bytes) == (1000, 10_000)


def test_a_long_phase_is_said_then_throttled_then_ended_with_its_duration() -> None:
    clock, updates = Clock(), []
    work = phase(clock, updates)
    clock.now += 1.0
    work.advance(1, 5)
    assert [(u.state, u.done, u.bytes, u.elapsed_seconds) for u in updates] == [
        ("started", 1, 5, 1.0)]
    for _ in range(100):  # within one interval: no more updates, however many advances
        clock.now += 0.004
        work.advance(1, 5)
    assert len(updates) == 1
    clock.now += 0.1  # 0.5 s after the start was said
    work.advance(1, 5)
    assert [u.state for u in updates] == ["started", "progress"]
    assert updates[-1].done == 102
    clock.now += 2.0
    work.finish()
    work.finish()  # once only
    last = updates[-1]
    assert (last.state, last.done, last.bytes, last.unit) == ("finished", 102, 510, "files")
    assert last.elapsed_seconds == pytest.approx(3.5)
    work.advance()
    work.poll()
    assert len(updates) == 3, "nothing after the end"


def test_at_most_one_update_per_interval_over_a_long_phase() -> None:
    clock, updates = Clock(), []
    work = phase(clock, updates)
    for _ in range(60_000):  # 60 s of one file a millisecond
        clock.now += 0.001
        work.advance()
    work.finish()
    # Said at 1 s, then every 0.5 s until 60 s, then its end: ~120 updates, not 60,000.
    assert 115 <= len(updates) <= 121
    assert updates[0].state == "started" and updates[-1].state == "finished"
    assert all(u.state == "progress" for u in updates[1:-1])
    assert [u.done for u in updates] == sorted(u.done for u in updates)


def test_a_phase_that_cannot_count_is_said_by_poll() -> None:
    clock, updates = Clock(), []
    work = Phase(updates.append, "remove_pod", "removing pod p", clock=clock)
    work.poll()
    assert updates == []
    clock.now += 1.2
    work.poll()
    clock.now += 200
    work.finish()
    assert [(u.state, u.unit, u.done) for u in updates] == [("started", "", 0),
                                                            ("finished", "", 0)]
    assert updates[-1].elapsed_seconds == pytest.approx(201.2)


def test_a_zero_threshold_says_the_phase_at_once() -> None:
    clock, updates = Clock(), []
    work = phase(clock, updates, threshold=0, total=7)
    assert [(u.state, u.total) for u in updates] == [("started", 7)]
    work.finish()
    assert [u.state for u in updates] == ["started", "finished"]


def test_a_report_that_raises_never_fails_the_work() -> None:
    clock = Clock()

    def broken(update: PhaseUpdate) -> None:
        raise RuntimeError("observer bug")

    work = Phase(broken, "copy_inputs", "copying inputs in", clock=clock, threshold=0)
    clock.now += 5
    work.advance()
    work.finish()
    assert work.done == 1


def test_without_a_listener_a_phase_is_never_due() -> None:
    clock = Clock()
    work = Phase(None, "copy_inputs", "copying inputs in", clock=clock, threshold=0)
    clock.now += 1000
    work.advance()
    work.poll()
    work.finish()
    assert not work.said


class Observer:
    def __init__(self) -> None:
        self.updates: list[tuple[str, PhaseUpdate]] = []
        self.said = threading.Event()

    def phase(self, task: Task, update: PhaseUpdate) -> None:
        self.updates.append((task.name, update))
        self.said.set()


TASK = Task(name="big", module_type="script", container=ContainerSpec(image="i"), script="true")


def test_phases_reach_the_observer_and_the_test_knob_sets_the_threshold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THRESHOLD_VARIABLE, "0")
    observer = Observer()
    work = Phases(observer, TASK).start("write_back", "writing back", unit="paths", total=2)
    work.advance()
    work.finish()
    assert [(name, u.state, u.name) for name, u in observer.updates] == [
        ("big", "started", "write_back"), ("big", "finished", "write_back")]
    assert observer.updates[-1][1].done == 1


def test_an_observer_without_phases_hears_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THRESHOLD_VARIABLE, "0")
    with Phases(object(), TASK).blocking("remove_pod", "removing pod p") as work:
        assert not work.said


def test_a_blocking_phase_is_said_by_its_timer_while_the_caller_waits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THRESHOLD_VARIABLE, "0.01")
    observer = Observer()
    with Phases(observer, TASK).blocking("remove_pod", "removing pod p"):
        # The caller is stuck in one call (Podman removing a layer): the timer speaks.
        assert observer.said.wait(10)
    assert [u.state for _, u in observer.updates] == ["started", "finished"]


def test_a_short_blocking_phase_says_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THRESHOLD_VARIABLE, raising=False)
    observer = Observer()
    with Phases(observer, TASK).blocking("remove_pod", "removing pod p"):
        pass
    assert observer.updates == []
