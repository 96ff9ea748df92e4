"""TaskPod.wait_exited: polls until the container's process ended, within a time limit; and
TaskPod.wait_for_inputs, which stops waiting for a copy once the container has stopped."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from buildr_podman.errors import BackendError
from buildr_podman.podman import pods
from buildr_podman.podman.libpod import NotFound
from buildr_podman.podman.pods import TaskPod


class FakeContainer:
    """Podman's libpod API as far as the inspection of one container goes."""

    def __init__(self, statuses: list[str], gone_after: int | None = None) -> None:
        self.statuses = statuses
        self.gone_after = gone_after
        self.reloads = 0
        self.status = statuses[0]

    def inspect_container(self, container: str) -> dict[str, Any]:
        assert container == "c1"
        if self.gone_after is not None and self.reloads >= self.gone_after:
            raise NotFound(404, "no such container")
        self.status = self.statuses[min(self.reloads, len(self.statuses) - 1)]
        self.reloads += 1
        return {"State": {"Status": self.status, "Pid": 1}}


def pod(container: FakeContainer, copy: object = None) -> TaskPod:
    return TaskPod("p", "c1", Path("/nonexistent/agent.sock"), container,  # type: ignore[arg-type]
                   copy)  # type: ignore[arg-type]


def test_returns_once_the_container_has_exited() -> None:
    container = FakeContainer(["running", "running", "stopping", "exited"])
    pod(container).wait_exited(5)
    assert container.reloads == 4


def test_a_container_removed_from_outside_counts_as_exited() -> None:
    container = FakeContainer(["running"], gone_after=2)
    pod(container).wait_exited(5)
    assert container.reloads == 2


def test_gives_up_after_the_timeout() -> None:
    container = FakeContainer(["running"])
    started = time.monotonic()
    pod(container).wait_exited(0.1)
    assert 0.1 <= time.monotonic() - started < 2
    assert container.status == "running"


def test_a_container_removed_from_outside_is_not_running() -> None:
    assert not pod(FakeContainer(["running"], gone_after=0)).is_running()


def test_an_api_that_cannot_answer_ends_the_wait() -> None:
    class Unreachable(FakeContainer):
        def inspect_container(self, container: str) -> dict[str, Any]:
            raise ConnectionRefusedError("the API service is gone")

    started = time.monotonic()
    pod(Unreachable(["running"])).wait_exited(5)
    assert time.monotonic() - started < 1


class SlowCopy:
    """An InputCopy that would take a minute unless stopped."""

    def __init__(self) -> None:
        self.stopped = threading.Event()

    def wait(self, timeout: float) -> bool:
        return self.stopped.wait(timeout)

    def stop(self) -> None:
        self.stopped.set()

    def poll(self) -> None:
        pass

    def finish(self) -> None:
        assert self.stopped.wait(60)


def test_a_container_that_stops_during_the_copy_stops_the_copy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pods, "CONTAINER_CHECK_SECONDS", 0.01)
    copy = SlowCopy()
    killed = pod(FakeContainer(["running", "running", "exited"]), copy)
    started = time.monotonic()
    with pytest.raises(BackendError, match="stopped while its inputs were being copied in"):
        killed.wait_for_inputs()
    assert copy.stopped.is_set() and time.monotonic() - started < 5
