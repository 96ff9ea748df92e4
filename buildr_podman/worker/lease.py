"""One lease, start to end: fetch the Action and its inputs, run the task in a pod with the
project's executor and agent, store and upload the result, say how it went.

The result is the task cache's own ActionResult (cache/task_cache.py `store_result`): a client
lands it exactly as it lands a cache hit, and the scheduler puts a success in its ActionCache,
so it is a cache hit for everyone later. The task runs as on the client's machine: the input
root's `workspace/` is the repository (inputs copied into the pod, as `inputs = "copy"`), each
`.buildr/out/NAME/` is shown as that module's outputs of this run, laid over the workspace in
the order of buildr.layers by the agent. Another client's Action (no buildr.version) runs with
its whole input root as the workspace, and its result lists the outputs its Command declares
(outputs.py), as REAPI says.

The lease's status says what the client is told besides the result:
  OK                  the task ran (whatever its exit code): the result says how it went
  DEADLINE_EXCEEDED   it ran past the Action's timeout: the result holds what it changed
  INVALID_ARGUMENT    the worker refuses the Action (a property it does not understand, ...)
  FAILED_PRECONDITION an input blob is missing or damaged, the image is not on this worker,
                      or Podman or the agent could not run the task
  UNAVAILABLE         the worker stopped (SIGTERM) or lost the CAS: the scheduler runs the
                      Action again elsewhere (BuildGrid retries UNAVAILABLE and INTERNAL)
  CANCELLED           the scheduler cancelled the lease (bot.py kills its task): never
                      reported, only said in the worker's log
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.archive.owned import remove_tree
from buildr_podman.cache.remote import RemoteCache, RemoteUnavailable, blob_digests
from buildr_podman.cache.remote_config import RemoteCacheSettings
from buildr_podman.cache.store import Store
from buildr_podman.cache.task_cache import OutputRecorder, store_result
from buildr_podman.errors import BuildrError
from buildr_podman.model import Project, Task, TaskResult
from buildr_podman.phases import PhaseUpdate
from buildr_podman.worker.inputs import ActionInputs, BadInput
from buildr_podman.worker.outputs import declared_result
from buildr_podman.worker.properties import OUTPUTS_DIR, Refused, task_of

if TYPE_CHECKING:
    from buildr_podman.podman.agent_build import AgentBundle
    from buildr_podman.podman.connection import PodmanApi

__all__ = ["Code", "LeaseOutcome", "LeaseRunner", "Payload", "Stopping", "payload_hash"]

#: what a lease carries: the Action, or its digest
Payload = re_pb2.Action | re_pb2.Digest


class Code:
    """google.rpc.Code values a lease's status uses."""

    OK = 0
    CANCELLED = 1
    DEADLINE_EXCEEDED = 4
    INVALID_ARGUMENT = 3
    FAILED_PRECONDITION = 9
    INTERNAL = 13
    UNAVAILABLE = 14


@dataclass
class LeaseOutcome:
    """How a lease ended: its status and, when the task ran, the ActionResult."""

    code: int
    message: str
    result: re_pb2.ActionResult | None
    action_hash: str
    task: str
    summary: str  #: one word or two for the worker's line: ok, exit 2, refused, ...


class Stopping(Exception):
    """The worker is stopping: the lease goes back to the scheduler."""


class Cancelled(Exception):
    """The scheduler cancelled the lease: nothing more is done for it."""


class LeaseRunner:
    """Runs leases; one per worker, shared by its lease threads."""

    def __init__(self, api: PodmanApi, agent: AgentBundle, store: Store,
                 settings: RemoteCacheSettings, work_root: Path, worker: str,
                 stopping: threading.Event) -> None:
        self.api = api
        self.agent = agent
        self.store = store
        self.settings = settings
        self.work_root = work_root
        self.worker = worker
        self.stopping = stopping
        self._running = 0
        self._lock = threading.Lock()
        self._images: set[str] = set()  #: found here once: an id names the same content
        self._serials = itertools.count(1)
        #: lease id -> the task name its pods are labelled with (unique among running leases)
        self._pod_tasks: dict[str, str] = {}

    def run(self, payload: Payload, lease_id: str = "",
            cancelled: threading.Event | None = None) -> LeaseOutcome:
        """Runs the Action (the payload, or its digest) of lease `lease_id` and returns how it
        ended; never raises but for bugs. `cancelled` is checked between the lease's steps
        (kill() stops the task itself). The store is kept under its bound between leases:
        evicted when the last running lease ends (never under one that is reading its blobs)."""
        with self._lock:
            self._running += 1
        try:
            return self._lease(payload, lease_id, cancelled or threading.Event())
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self.store.evict()

    def kill(self, lease_id: str) -> None:
        """Kills the running containers of lease `lease_id`: its task ends, and its pod is
        removed as any other's. Only that lease's: another lease of the same Action (a client
        that ran it again at once) may be running beside it."""
        from buildr_podman.podman.leftovers import kill_own_containers

        with self._lock:
            task = self._pod_tasks.get(lease_id)
        if task is not None:  # else not started yet, or over: it checks `cancelled` itself
            kill_own_containers(task=task)

    def _lease(self, payload: Payload, lease_id: str,
               cancelled: threading.Event) -> LeaseOutcome:
        started = Timestamp()
        started.GetCurrentTime()
        remote = RemoteCache(self.settings)  # its failures are this lease's alone
        action_hash = payload_hash(payload)
        task_name = f"action-{action_hash[:12]}"
        pod_task = f"{task_name}-{next(self._serials)}"
        with self._lock:
            self._pod_tasks[lease_id] = pod_task

        def ended(code: int, why: object, summary: str) -> LeaseOutcome:
            if self.stopping.is_set():  # whatever failed, it failed because the pod was killed
                code, why, summary = Code.UNAVAILABLE, "the worker stopped", "handed back"
            elif cancelled.is_set():  # likewise
                code, why, summary = Code.CANCELLED, "the scheduler cancelled it", "cancelled"
            return LeaseOutcome(code, self._said(why), None, action_hash, task_name, summary)

        try:
            action = payload if isinstance(payload, re_pb2.Action) else \
                ActionInputs(remote, self.store).message(payload, re_pb2.Action)
            task, ran, result = self._run(remote, action_hash, action, started, pod_task,
                                          cancelled)
            return _outcome(action_hash, task, ran, result, self._said)
        except Cancelled as exc:
            return ended(Code.CANCELLED, exc, "cancelled")
        except Refused as exc:
            return ended(Code.INVALID_ARGUMENT, exc, "refused")
        except (BadInput, BuildrError) as exc:
            return ended(Code.FAILED_PRECONDITION, exc, "failed")
        except (RemoteUnavailable, Stopping, OSError) as exc:
            return ended(Code.UNAVAILABLE, exc, "handed back")
        finally:
            remote.close()
            with self._lock:
                self._pod_tasks.pop(lease_id, None)

    def _run(self, remote: RemoteCache, action_hash: str, action: re_pb2.Action,
             started: Timestamp, pod_task: str, cancelled: threading.Event
             ) -> tuple[Task, TaskResult, re_pb2.ActionResult]:
        inputs = ActionInputs(remote, self.store)
        command = inputs.message(action.command_digest, re_pb2.Command)
        directories = inputs.directories(action.input_root_digest)
        leased = task_of(action_hash, action, command, directories)
        self._check_image(leased.image)
        job = Path(tempfile.mkdtemp(prefix="lease-", dir=self.work_root))  # 0700, ours
        try:
            fetched = Timestamp()
            fetched.GetCurrentTime()
            inputs.materialise(action.input_root_digest.hash, directories, job / "root")
            self._check_still_wanted(cancelled)
            ran = Timestamp()
            ran.GetCurrentTime()
            result, output = self._execute(leased.task, job, leased.workspace,
                                           leased.dependencies, pod_task)
            try:
                self._check_still_wanted(cancelled)
                if leased.outputs is None:  # buildr-podman's Action: the change set
                    action_result = store_result(self.store, result, output)
                    blobs = blob_digests(action_result)
                else:  # another client's: the outputs it declares
                    action_result, blobs = declared_result(self.store, result, output,
                                                           leased.outputs)
            finally:
                output.discard()
            action_result.execution_metadata.CopyFrom(re_pb2.ExecutedActionMetadata(
                worker=self.worker, worker_start_timestamp=started,
                input_fetch_start_timestamp=started, input_fetch_completed_timestamp=fetched,
                execution_start_timestamp=ran))
            action_result.execution_metadata.execution_completed_timestamp.GetCurrentTime()
            remote.upload_blobs(blobs, self.store)
            action_result.execution_metadata.worker_completed_timestamp.GetCurrentTime()
            return leased.task, result, action_result
        finally:
            remove_tree(job)

    def _execute(self, task: Task, job: Path, workspace: str, dependencies: tuple[str, ...],
                 pod_task: str) -> tuple[TaskResult, OutputRecorder]:
        """Runs the task in a pod of its own (removed before this returns), named and
        labelled as `pod_task`, the lease's own (kill() finds it by that), the input root's
        `workspace` as its repository, and lands its changes under job/out/; returns the
        result and its recorded output."""
        from buildr_podman.podman.executor import PodmanSession

        task = dataclasses.replace(task, name=pod_task)
        root = job / "root"
        project = Project(root=root / workspace if workspace else root, out_dir=job / "out")
        session = PodmanSession(self.api, project, self.agent)
        output = OutputRecorder(_Quiet(), self.store, task)
        try:
            for name in dependencies:  # as if they had run in this session
                session.outputs_landed(dataclasses.replace(task, name=name),
                                       root / OUTPUTS_DIR / name)
            result = session.run_task(task, output)
        except BaseException:
            output.discard()
            raise
        finally:
            session.close()
        if not isinstance(result, TaskResult):  # PodmanSession returns TaskResult
            raise TypeError(f"unexpected result {result!r}")
        return result, output

    def _check_image(self, image: str) -> None:
        """The image must be on this worker (it never pulls: the key names its content)."""
        from buildr_podman.podman.podman_cli import PodmanCliError, podman

        if image in self._images:
            return
        try:
            podman("image", "exists", image, timeout=30)
        except PodmanCliError as exc:
            raise BadInput(f"image {image} is not on this worker (podman image exists: "
                           f"{exc}); load or build it there (the same image id) first") from exc
        with self._lock:
            self._images.add(image)

    def _check_still_wanted(self, cancelled: threading.Event) -> None:
        if self.stopping.is_set():
            raise Stopping("the worker stopped")
        if cancelled.is_set():
            raise Cancelled("the scheduler cancelled it")

    def _said(self, what: object) -> str:
        return f"worker {self.worker}: {what}"


class _Quiet:
    """The lease's observer: its output is recorded (OutputRecorder) and goes back in the
    result, nowhere else; notes and phases are the worker's business only."""

    def output(self, task: Task, stream: str, data: bytes) -> None:
        pass

    def log(self, task: Task, message: str) -> None:
        pass

    def phase(self, task: Task, update: PhaseUpdate) -> None:
        pass


def _outcome(action_hash: str, task: Task, ran: TaskResult, action_result: re_pb2.ActionResult,
             said: Callable[[object], str]) -> LeaseOutcome:
    if ran.timed_out:
        return LeaseOutcome(Code.DEADLINE_EXCEEDED, said(
            f"the task ran past its timeout of {task.timeout_seconds:g} s"), action_result,
            action_hash, task.name, "timed out")
    if ran.error:
        return LeaseOutcome(Code.FAILED_PRECONDITION, said(ran.error), action_result,
                            action_hash, task.name, "failed")
    code = action_result.exit_code
    return LeaseOutcome(Code.OK, "", action_result, action_hash, task.name,
                        "ok" if code == 0 else f"exit {code}")


def payload_hash(payload: Payload) -> str:
    """The Action's digest hash (a lease carries the Action or its digest)."""
    if isinstance(payload, re_pb2.Digest):
        return payload.hash
    return hashlib.sha256(payload.SerializeToString(deterministic=True)).hexdigest()


