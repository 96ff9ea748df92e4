"""LeaseRunner.kill: a cancelled lease's pods are found by a task name of that lease's own,
never by one that another lease of the same Action shares (no Podman: the kill is recorded)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.cache.remote_config import RemoteCacheSettings
from buildr_podman.cache.store import Store
from buildr_podman.podman import leftovers
from buildr_podman.worker import lease as lease_module
from buildr_podman.worker.lease import Code, LeaseRunner

DIGEST = re_pb2.Digest(hash="b" * 64, size_bytes=10)


class _NoRemote:
    def __init__(self, settings: object) -> None:
        pass

    def close(self) -> None:
        pass


def test_each_lease_is_killed_by_a_name_of_its_own(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    killed: list[str | None] = []
    monkeypatch.setattr(leftovers, "kill_own_containers",
                        lambda pid=None, task=None: killed.append(task) or [])
    monkeypatch.setattr(lease_module, "RemoteCache", _NoRemote)
    monkeypatch.setattr(lease_module, "ActionInputs",
                        lambda remote, store: _Inputs())
    running = threading.Barrier(3)
    release = threading.Event()
    seen: dict[str, str] = {}

    def run(self: LeaseRunner, remote: object, action_hash: str, action: object,
            started: object, pod_task: str, cancelled: threading.Event) -> Any:
        seen[threading.current_thread().name] = pod_task
        running.wait(10)
        release.wait(10)
        raise lease_module.Cancelled("the scheduler cancelled it")

    monkeypatch.setattr(LeaseRunner, "_run", run)
    runner = LeaseRunner(None, None, Store(tmp_path / "store", 1 << 20),  # type: ignore[arg-type]
                         RemoteCacheSettings("grpc://x", "x"), tmp_path, "w1",
                         threading.Event())
    outcomes: list[Any] = []
    threads = [threading.Thread(target=lambda i=i: outcomes.append(
        runner.run(DIGEST, f"L{i}", threading.Event())), name=f"L{i}") for i in (1, 2)]
    for thread in threads:
        thread.start()
    running.wait(10)  # both leases of the one Action are running
    runner.kill("L1")
    runner.kill("unknown")  # not running here: nothing to kill
    release.set()
    for thread in threads:
        thread.join(10)
    assert killed == [seen["L1"]]
    assert seen["L1"] != seen["L2"] and all(
        name.startswith(f"action-{DIGEST.hash[:12]}-") for name in seen.values())
    runner.kill("L1")  # over: its name is forgotten
    assert len(killed) == 1
    assert {o.code for o in outcomes} == {Code.CANCELLED}


class _Inputs:
    def message(self, digest: object, kind: type) -> Any:
        return kind()
