"""The worker's bot session (Remote Workers API, google.devtools.remoteworkers.v1test2): take
leases from the scheduler, run up to `jobs` at once, report each when it ends.

One thread talks to the scheduler: CreateBotSession once, then UpdateBotSession in a loop.
Each call carries every lease the worker holds, ACTIVE while it runs and COMPLETED with its
status and result once it ended; the answer holds the leases the scheduler wants run (new ones
among them). A call with room for more leases waits at the scheduler until one is assigned
(a long poll, at most POLL_SECONDS); a lease that ends cancels the waiting call, so that its
result is reported at once. Calling at least every POLL_SECONDS is also the keepalive: a
worker that stops calling is taken for dead and its leases go to others.

The bot id is stable (`buildr-podman@HOST/NAME`): a restarted worker's CreateBotSession makes
the scheduler close the old session and hand its leases out again at once, rather than after
the keepalive expires.

A lease the scheduler drops from its answer while it runs was cancelled (a client cancelled
its Execute, as `buildr-podman run` does on Ctrl-C; BuildGrid then leaves it out): the lease is
told (its `cancelled` event, checked between its steps) and its task's containers are killed,
again each second until the lease ends (a pod may start meanwhile); its outcome is not reported.

Stopping (SIGINT, SIGTERM): no more leases are taken (the session turns BOT_TERMINATING), the
running tasks' containers are killed, their pods removed, and their leases completed as
UNAVAILABLE, which the scheduler gives to another worker; then the last update, and exit 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman._protos.google.devtools.remoteworkers.v1test2 import (
    bots_pb2,
    bots_pb2_grpc,
    worker_pb2,
)
from buildr_podman.worker.lease import Code, LeaseOutcome, Payload, payload_hash

__all__ = ["POLL_SECONDS", "BotSession", "Lease"]

POLL_SECONDS = 5.0  #: the longest an UpdateBotSession waits at the scheduler for a lease
RETRY_SECONDS = 1.0  #: after a failed call, before the next
STOP_CHECK_SECONDS = 1.0  #: while stopping, between kills of what still runs
CAPACITY_KEY = "capacity"  #: the Worker config that says how many leases at once (BuildGrid)

#: runs one lease's payload (an Action, or its digest), given the lease's id, until it ends or
#: `cancelled` is set; never raises
RunLease = Callable[[Payload, str, threading.Event], LeaseOutcome]
#: kills the containers of the lease with this id (a cancelled lease's task)
KillLease = Callable[[str], None]
#: where each ended lease is said (one line)
Say = Callable[[str], None]


@dataclass
class Lease:
    """A lease the worker holds: running (future) or ended (outcome, not yet reported)."""

    proto: bots_pb2.Lease
    started: float
    payload: Payload
    future: Future[LeaseOutcome] | None = None
    outcome: LeaseOutcome | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


class BotSession:
    def __init__(self, stub: bots_pb2_grpc.BotsStub, instance: str, bot_id: str,
                 properties: dict[str, str], jobs: int, run_lease: RunLease, say: Say,
                 stopping: threading.Event, kill_lease: KillLease) -> None:
        self.stub = stub
        self.instance = instance
        self.bot_id = bot_id
        self.properties = properties
        self.jobs = jobs
        self.run_lease = run_lease
        self.kill_lease = kill_lease
        self.say = say
        self.stopping = stopping
        self.changed = threading.Event()  #: a lease ended, or the worker is stopping
        self.leases: dict[str, Lease] = {}
        self.session: bots_pb2.BotSession | None = None
        self._last_failure = ""  #: the failure last said, until a call succeeds
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="lease")

    def stop(self) -> None:
        """From a signal handler: no more leases; serve() hands back the running ones."""
        self.stopping.set()
        self.changed.set()

    def serve(self, on_stop: Callable[[], None]) -> None:
        """Takes and runs leases until stop(); then `on_stop` (which kills the running tasks,
        called again each second while any runs: a pod may start meanwhile), waits for every
        lease, reports them, and returns."""
        try:
            while not self.stopping.is_set():
                self._exchange()
        finally:
            while any(lease.future is not None and not lease.future.done()
                      for lease in self.leases.values()):
                on_stop()
                self._wait_for_leases(STOP_CHECK_SECONDS)
            self._pool.shutdown(wait=True)
            self._collect()
            self._final_report()

    def _wait_for_leases(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for lease in list(self.leases.values()):
            if lease.future is not None:
                try:
                    lease.future.exception(timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    return

    # -- one exchange with the scheduler ----------------------------------------------------

    def _exchange(self) -> None:
        self.changed.clear()  # before collecting: a lease ending from now on is seen next time
        self._collect()
        try:
            answer = self._call(bots_pb2.BotStatus.OK)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self._failed(exc)
            return
        if answer is None:
            return
        if self._last_failure:
            self.say("the scheduler answers again")
            self._last_failure = ""
        self._take(answer)
        if len(self.leases) >= self.jobs and not self.changed.is_set():
            # Every slot runs a lease: the scheduler would answer at once. Until one ends,
            # only the keepalive is due.
            self.changed.wait(POLL_SECONDS)

    def _call(self, status: int, wait: bool = True) -> bots_pb2.BotSession | None:
        """One CreateBotSession or UpdateBotSession; None if cancelled by a lease's end."""
        session = self._session_message(status)
        if self.session is None:
            call = self.stub.CreateBotSession.future(
                bots_pb2.CreateBotSessionRequest(parent=self.instance, bot_session=session),
                timeout=POLL_SECONDS)
        else:
            call = self.stub.UpdateBotSession.future(
                bots_pb2.UpdateBotSessionRequest(name=session.name, bot_session=session),
                timeout=POLL_SECONDS)
        if wait:
            done = threading.Event()
            call.add_done_callback(lambda _: done.set())
            while not done.wait(0.05):
                if self.changed.is_set() or self.stopping.is_set():
                    if call.cancel():
                        return None
        answer: bots_pb2.BotSession = call.result()
        return answer

    def _session_message(self, status: int) -> bots_pb2.BotSession:
        session = bots_pb2.BotSession()
        if self.session is not None:
            session.CopyFrom(self.session)
            del session.leases[:]
        else:
            session.bot_id = self.bot_id
            session.worker.CopyFrom(worker_pb2.Worker(
                devices=[worker_pb2.Device(handle=self.bot_id, properties=[
                    worker_pb2.Device.Property(key=k, value=v)
                    for k, v in sorted(self.properties.items())])],
                configs=[worker_pb2.Worker.Config(key=CAPACITY_KEY, value=str(self.jobs))]))
        session.status = status  # type: ignore[assignment]
        for lease in self.leases.values():
            session.leases.append(_reported(lease))
        return session

    def _take(self, answer: bots_pb2.BotSession) -> None:
        """The scheduler's answer: forget what it acknowledged, start what is new."""
        reported = {i for i, lease in self.leases.items() if lease.outcome is not None}
        for lease_id in reported:
            del self.leases[lease_id]
        self.session = answer
        for proto in answer.leases:
            if proto.id in self.leases or proto.state != bots_pb2.LeaseState.ACTIVE:
                continue
            if proto.id in reported:
                continue  # the answer to a call that reported it: gone next time
            self._start(proto)
        wanted = {p.id for p in answer.leases}
        for lease_id, lease in self.leases.items():
            if lease_id not in wanted and lease.outcome is None \
                    and lease.proto.state != bots_pb2.LeaseState.CANCELLED:
                lease.proto.state = bots_pb2.LeaseState.CANCELLED  # result dropped at the end
                self._cancel(lease)

    def _cancel(self, lease: Lease) -> None:
        """Stops a lease the scheduler no longer wants, from a thread of its own: killing a
        container is a Podman call, and the exchanges with the scheduler go on meanwhile."""
        lease.cancelled.set()
        self.say(f"{payload_hash(lease.payload)[:12]} cancelled by the scheduler: stopping "
                 "its task")
        threading.Thread(target=self._kill_until_ended, args=(lease,), name="cancel",
                         daemon=True).start()

    def _kill_until_ended(self, lease: Lease) -> None:
        future = lease.future
        while future is not None and not future.done():
            self.kill_lease(lease.proto.id)
            try:
                future.exception(timeout=STOP_CHECK_SECONDS)
            except TimeoutError:
                pass  # still running: its pod may have started after the kill

    def _start(self, proto: bots_pb2.Lease) -> None:
        payload: Payload
        if proto.payload.TypeName() == re_pb2.Action.DESCRIPTOR.full_name:
            payload = re_pb2.Action()
        else:
            payload = re_pb2.Digest()
        if not proto.payload.Unpack(payload):
            return  # neither: left unreported, the scheduler gives it to another worker
        lease = Lease(proto, time.monotonic(), payload)
        lease.future = self._pool.submit(self._run_safely, payload, proto.id, lease.cancelled)
        lease.future.add_done_callback(lambda _: self.changed.set())
        self.leases[proto.id] = lease

    def _run_safely(self, payload: Payload, lease_id: str,
                    cancelled: threading.Event) -> LeaseOutcome:
        try:
            return self.run_lease(payload, lease_id, cancelled)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: the lease is retried elsewhere
            digest = payload.hash if isinstance(payload, re_pb2.Digest) else "?"
            return LeaseOutcome(Code.INTERNAL, f"worker {self.bot_id}: internal error: "
                                f"{type(exc).__name__}: {exc}", None, digest, "-", "failed")

    def _collect(self) -> None:
        """The ended leases' outcomes, each said once."""
        for lease in list(self.leases.values()):
            if lease.outcome is None and lease.future is not None and lease.future.done():
                lease.outcome = lease.future.result()
                self._say(lease)
                if lease.proto.state == bots_pb2.LeaseState.CANCELLED:
                    del self.leases[lease.proto.id]  # the scheduler no longer wants it

    def _say(self, lease: Lease) -> None:
        outcome = lease.outcome
        assert outcome is not None
        seconds = time.monotonic() - lease.started
        line = f"{outcome.action_hash[:12]} {outcome.task} {outcome.summary} in {seconds:.2f} s"
        if outcome.code != Code.OK and outcome.message:
            line += f": {outcome.message}"
        self.say(line)

    def _failed(self, exc: grpc.RpcError) -> None:
        """A failed call: said once (until another failure or a success), then tried again;
        for anything but a transient failure, in a new session (the old one expired, or the
        scheduler forgot it: the leases it holds go back to it as they end)."""
        code = exc.code()
        said = f"the scheduler answered {code.name}: {(exc.details() or '').strip()[:200]}"
        if said != self._last_failure:
            self.say(f"{said}; trying again every {RETRY_SECONDS:g} s")
            self._last_failure = said
        if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            self.session = None
        self.stopping.wait(RETRY_SECONDS)

    def _final_report(self) -> None:
        """The ended leases, and the session's end, told to the scheduler (best effort)."""
        if self.session is None and not self.leases:
            return
        try:
            self._call(bots_pb2.BotStatus.BOT_TERMINATING, wait=False)
        except grpc.RpcError as exc:
            self.say(f"the last report to the scheduler failed ({exc.code().name}): its leases "
                     "go to other workers once this session expires")


def _reported(lease: Lease) -> bots_pb2.Lease:
    """The lease as the worker reports it: ACTIVE while running, else COMPLETED with its
    status and result."""
    proto = bots_pb2.Lease(id=lease.proto.id, payload=lease.proto.payload,
                           state=bots_pb2.LeaseState.ACTIVE)
    outcome = lease.outcome
    if outcome is not None:
        proto.state = bots_pb2.LeaseState.COMPLETED
        proto.status.code = outcome.code
        proto.status.message = outcome.message
        if outcome.result is not None:
            proto.result.Pack(outcome.result)
    return proto
