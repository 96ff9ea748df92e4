"""The worker's bot session against a fake scheduler: leases run and are reported once, with
their status and result; stopping hands the running ones back and ends the session."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman._protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from buildr_podman.worker import bot as bot_module
from buildr_podman.worker.bot import BotSession
from buildr_podman.worker.lease import Code, LeaseOutcome

DIGEST = re_pb2.Digest(hash="a" * 64, size_bytes=10)


class FakeCall:
    def __init__(self, answer: bots_pb2.BotSession) -> None:
        self.answer = answer

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        callback(self)

    def cancel(self) -> bool:
        return False

    def result(self) -> bots_pb2.BotSession:
        return self.answer


class FakeScheduler:
    """Hands out `leases` (one per answer, as they are assigned) and records every request."""

    def __init__(self, leases: list[bots_pb2.Lease]) -> None:
        self.to_assign = list(leases)
        self.requests: list[bots_pb2.BotSession] = []
        self.active: dict[str, bots_pb2.Lease] = {}
        self.completed: dict[str, bots_pb2.Lease] = {}
        self.done = threading.Event()
        self.cancelled: set[str] = set()  #: leases a client cancelled

    def answer(self, session: bots_pb2.BotSession) -> FakeCall:
        self.requests.append(session)
        for lease in session.leases:
            if lease.state == bots_pb2.LeaseState.COMPLETED:
                self.completed[lease.id] = lease
                self.active.pop(lease.id, None)
        if self.to_assign and session.status == bots_pb2.BotStatus.OK:
            lease = self.to_assign.pop(0)
            self.active[lease.id] = lease
        if not self.to_assign and not self.active:
            self.done.set()
        for lease_id in self.cancelled:
            self.active.pop(lease_id, None)  # as BuildGrid: left out of the answer
        answer = bots_pb2.BotSession()
        answer.CopyFrom(session)
        answer.name = "sessions/1"
        del answer.leases[:]
        answer.leases.extend(self.active.values())
        return FakeCall(answer)


class FakeStub:
    def __init__(self, scheduler: FakeScheduler) -> None:
        self.CreateBotSession = _Method(scheduler, lambda r: r.bot_session)
        self.UpdateBotSession = _Method(scheduler, lambda r: r.bot_session)


class _Method:
    def __init__(self, scheduler: FakeScheduler, session: Callable[[Any], Any]) -> None:
        self.scheduler = scheduler
        self.session = session

    def future(self, request: Any, timeout: float) -> FakeCall:
        return self.scheduler.answer(self.session(request))


def lease(lease_id: str, payload: re_pb2.Action | re_pb2.Digest) -> bots_pb2.Lease:
    proto = bots_pb2.Lease(id=lease_id, state=bots_pb2.LeaseState.ACTIVE)
    proto.payload.Pack(payload)
    return proto


def session(scheduler: FakeScheduler, run: Callable[[Any, str, threading.Event], LeaseOutcome],
            lines: list[str], jobs: int = 1,
            kill: Callable[[str], None] = lambda lease_id: None) -> BotSession:
    return BotSession(FakeStub(scheduler), "", "bot-1",  # type: ignore[arg-type]
                      {"OSFamily": "linux"}, jobs, run, lines.append, threading.Event(), kill)


def test_leases_run_and_are_reported_completed_once_with_their_result() -> None:
    scheduler = FakeScheduler([lease("L1", DIGEST), lease("L2", re_pb2.Action())])
    seen: list[object] = []

    def run(payload: Any, lease_id: str, cancelled: threading.Event) -> LeaseOutcome:
        seen.append(payload)
        return LeaseOutcome(Code.OK, "", re_pb2.ActionResult(exit_code=len(seen)), "h" * 64,
                            "action-x", "ok")

    lines: list[str] = []
    bot = session(scheduler, run, lines)
    threading.Thread(target=lambda: (scheduler.done.wait(10), bot.stop()), daemon=True).start()
    bot.serve(on_stop=lambda: None)
    assert [type(p).__name__ for p in seen] == ["Digest", "Action"]
    assert sorted(scheduler.completed) == ["L1", "L2"]
    result = re_pb2.ActionResult()
    assert scheduler.completed["L1"].result.Unpack(result) and result.exit_code == 1
    reports = [le.id for s in scheduler.requests for le in s.leases
               if le.state == bots_pb2.LeaseState.COMPLETED]
    assert sorted(reports) == ["L1", "L2"], "each lease is reported completed once"
    assert scheduler.requests[0].bot_id == "bot-1"
    assert scheduler.requests[0].worker.configs[0].key == "capacity"
    assert scheduler.requests[-1].status == bots_pb2.BotStatus.BOT_TERMINATING
    assert len(lines) == 2 and lines[0].startswith("hhhhhhhhhhhh action-x ok in ")


def test_stopping_hands_the_running_lease_back() -> None:
    scheduler = FakeScheduler([lease("L1", DIGEST)])
    started, killed = threading.Event(), threading.Event()

    def run(payload: Any, lease_id: str, cancelled: threading.Event) -> LeaseOutcome:
        started.set()
        killed.wait(10)  # the task runs until its container is killed
        return LeaseOutcome(Code.UNAVAILABLE, "worker bot-1: the worker stopped", None,
                            DIGEST.hash, "action-x", "handed back")

    lines: list[str] = []
    bot = session(scheduler, run, lines)
    threading.Thread(target=lambda: (started.wait(10), bot.stop()), daemon=True).start()
    bot.serve(on_stop=killed.set)
    assert killed.is_set()
    completed = scheduler.completed["L1"]
    assert completed.status.code == Code.UNAVAILABLE
    assert scheduler.requests[-1].status == bots_pb2.BotStatus.BOT_TERMINATING
    assert "handed back" in lines[0]


def test_a_lease_the_scheduler_drops_is_cancelled_its_task_killed_and_not_reported() -> None:
    scheduler = FakeScheduler([lease("L1", DIGEST)])
    started, killed = threading.Event(), threading.Event()
    seen_cancelled: list[bool] = []
    kills: list[str] = []

    def run(payload: Any, lease_id: str, cancelled: threading.Event) -> LeaseOutcome:
        started.set()
        killed.wait(10)  # the task runs until its container is killed
        seen_cancelled.append(cancelled.is_set())
        return LeaseOutcome(Code.CANCELLED, "worker bot-1: the scheduler cancelled it", None,
                            DIGEST.hash, "action-x", "cancelled")

    def kill(lease_id: str) -> None:
        kills.append(lease_id)
        killed.set()

    lines: list[str] = []
    bot = session(scheduler, run, lines, jobs=2, kill=kill)

    def cancel_then_stop() -> None:
        started.wait(10)
        scheduler.cancelled.add("L1")
        deadline = time.monotonic() + 10
        while len(lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        bot.stop()

    threading.Thread(target=cancel_then_stop, daemon=True).start()
    bot.serve(on_stop=lambda: None)
    assert kills and set(kills) == {"L1"} and seen_cancelled == [True]
    assert lines[0] == f"{DIGEST.hash[:12]} cancelled by the scheduler: stopping its task"
    assert " cancelled in " in lines[1]
    assert "L1" not in scheduler.completed  # its outcome is never reported
    assert all(le.state != bots_pb2.LeaseState.COMPLETED
               for s in scheduler.requests for le in s.leases)


def test_a_bug_while_running_a_lease_is_an_internal_error_retried_elsewhere() -> None:
    scheduler = FakeScheduler([lease("L1", DIGEST)])

    def run(payload: Any, lease_id: str, cancelled: threading.Event) -> LeaseOutcome:
        raise RuntimeError("oops")

    lines: list[str] = []
    bot = session(scheduler, run, lines)
    threading.Thread(target=lambda: (scheduler.done.wait(10), bot.stop()), daemon=True).start()
    bot.serve(on_stop=lambda: None)
    assert scheduler.completed["L1"].status.code == Code.INTERNAL
    assert "RuntimeError: oops" in scheduler.completed["L1"].status.message


def test_the_poll_is_short_enough_for_a_short_keepalive() -> None:
    assert bot_module.POLL_SECONDS < 8  # tests/integration/reapi_cluster.py uses 10 s
