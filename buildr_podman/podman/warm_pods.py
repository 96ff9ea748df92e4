"""Pods kept warm across the tasks of one run: a task takes an idle pod with the same container
settings, or starts one, and gives it back when it ended cleanly.

A `podman exec` costs ~160 ms here; a warm agent answers over gRPC in under a millisecond,
and resets the workspace to the baseline between tasks (agent/revert.py), so each task still
starts clean. Every pod is removed when the run's session closes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from buildr_podman.model import Task

if TYPE_CHECKING:
    from buildr_podman.phases import Phases
    from buildr_podman.podman.agent_client import AgentClient
    from buildr_podman.podman.pods import TaskPod

__all__ = ["AGENT_TAKEOVER_CAPABILITIES", "MAX_IDLE", "DependencyOutputs", "PodPool",
           "WarmPod", "container_key", "pool_key", "reusable"]

#: (module, the host directory of its outputs of this run) for each module whose outputs a
#: task uses (Task.outputs_used): each is bind-mounted read-only at Task.output_mount(module)
DependencyOutputs = tuple[tuple[str, Path], ...]

_SECRETS_KEY = os.urandom(32)
MAX_IDLE = 4  # idle pods kept for later tasks; each holds a container's memory meanwhile
AGENT_EXIT_SECONDS = 1.0  # an agent asked to shut down exits in ~30 ms; past this it is killed


def container_key(task: Task, outputs: DependencyOutputs = ()) -> str:
    """Tasks with equal keys can share a container: same image, mounts, network, capabilities,
    container environment and inputs. The user is set per task by the agent, so it may differ;
    where the image was named in the configuration does not matter.

    The inputs include the dependencies' outputs: the very directories mounted, and the ones
    laid over the workspace (inputs_from), in order. A bind mount shows the directory it was
    made from even after the host replaced it (every landing of outputs is a rename), and a
    workspace is laid once: so a container is never reused once a dependency's output has
    changed, and a task can never see outputs of the past."""
    shared = replace(task.container, user=None, image_source="")
    # Cache volumes are the task's own (cache_volumes.py): a pod with them serves one task.
    own = task.name if task.container.cache_volumes else ""
    return repr((shared, task.input_mapping, outputs, task.inputs_from, own))


def pool_key(task: Task, outputs: DependencyOutputs = ()) -> str:
    """Tasks with equal keys do share a warm pod: equal container_key and the same identity.

    A task can change its container's root file system (replace /bin/sh, say) and nothing
    resets it between tasks; only the workspace is reset. So a pod passes only to a task that
    runs as the same user with the same secrets: one that anything planted there could not
    take more from than the earlier task already had. A task with secrets thus never runs
    where a task without them (or with others) ran. The secrets go in as a digest, so that the
    key can be shown or logged (keyed with this process's own random key: no guessing).
    """
    secrets = hmac.new(_SECRETS_KEY, repr(sorted(task.secret_environment)).encode(),
                       hashlib.sha256).hexdigest()
    return (f"{container_key(task, outputs)} user={task.container.user or ''} "
            f"secrets={secrets[:32]}")


#: capabilities that let a task rewrite the agent of its own pod: remount its read-only
#: mounts (SYS_ADMIN) or trace it although it is not dumpable (SYS_PTRACE, agent/hardening.py)
AGENT_TAKEOVER_CAPABILITIES = frozenset({"ALL", "SYS_ADMIN", "SYS_PTRACE"})


def reusable(task: Task) -> bool:
    """Whether the task's pod may serve another task. Not after a task that could take over
    its agent (privileged, or one of AGENT_TAKEOVER_CAPABILITIES): asking for privileges may
    weaken the task's own container, never a later task's."""
    spec = task.container
    return not spec.privileged and not AGENT_TAKEOVER_CAPABILITIES & set(spec.cap_add)


@dataclass
class WarmPod:
    """A started pod with its agent connected and past the handshake."""

    key: str
    pod: TaskPod
    client: AgentClient
    resources: ExitStack = field(repr=False)
    tasks_run: int = 0
    #: where its removal is reported: the phases of the task that used it last. Removing a
    #: container whose layer holds a million files takes Podman minutes (phase "remove_pod").
    phases: Phases | None = field(default=None, repr=False)

    def close(self) -> None:
        """Asks the agent to exit, then removes the pod. The removal
        waits for the exit first: removing an exited container is the quick way (see
        TaskPod.wait_exited); an agent that does not exit is killed by the removal."""
        with self._removal():
            try:
                self.client.shutdown()
                self.client.close()
                self.pod.wait_exited(AGENT_EXIT_SECONDS)
            finally:
                self.resources.close()

    def remove(self) -> None:
        """Removes the pod without asking its agent: for an agent that no longer answers."""
        with self._removal():
            try:
                self.client.close()
            finally:
                self.resources.close()

    def _removal(self) -> AbstractContextManager[object]:
        if self.phases is None:
            return nullcontext()
        return self.phases.blocking("remove_pod", f"removing pod {self.pod.name}")


class PodPool:
    """Idle warm pods by container key; safe to use from the runner's worker threads."""

    def __init__(self, start: Callable[[Task, DependencyOutputs, Phases | None], WarmPod]) -> None:
        self._start = start
        self._idle: dict[str, list[WarmPod]] = {}
        self._order: list[WarmPod] = []  # idle pods, least recently used first
        #: pods started ahead of their task (prestart), by key, until a take() claims them
        self._starting: dict[str, Future[WarmPod]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def prestart(self, task: Task,
                 outputs: DependencyOutputs = ()) -> Callable[[], None] | None:
        """Reserves a pod for `task`, to be started by calling what is returned (in the
        caller's thread, ~0.2 s) and claimed by the task's take(), which waits for it: a run
        that knows its first task will run (--no-cache) starts its pod while it is still
        keying it. A failure to start is the claiming task's own (take() raises it). None
        when there is nothing to start (closed, or reserved already)."""
        starting: Future[WarmPod] = Future()
        key = pool_key(task, outputs)
        with self._lock:
            if self._closed or key in self._starting:
                return None
            self._starting[key] = starting
        return lambda: self._start_reserved(task, outputs, key, starting)

    def _start_reserved(self, task: Task, outputs: DependencyOutputs, key: str,
                        starting: Future[WarmPod]) -> None:
        try:
            pod = self._start(task, outputs, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the task that claims the pod
            starting.set_exception(exc)
            return
        if self._unclaimed_after_close(key, starting):
            pod.close()  # the run ended meanwhile (cancelled), and close() could not close it
        starting.set_result(pod)

    def _unclaimed_after_close(self, key: str, starting: Future[WarmPod]) -> bool:
        """Whether the pool closed while `starting` was under way, unclaimed (then it is
        forgotten here: its starter closes the pod)."""
        with self._lock:
            if not self._closed or self._starting.get(key) is not starting:
                return False
            del self._starting[key]
            return True

    def take(self, task: Task, outputs: DependencyOutputs = (),
             phases: Phases | None = None) -> WarmPod:
        """An idle pod for this task's settings, dependency outputs and identity (pool_key), or
        a newly started one; its long phases (copying the inputs in, its removal) are reported
        to the task's `phases`."""
        key = pool_key(task, outputs)
        with self._lock:
            starting = self._starting.pop(key, None)
            idle = self._idle.get(key)
            if starting is None and idle:
                pod = idle.pop()
                self._order.remove(pod)
                pod.phases = phases
                return pod
        if starting is not None:
            pod = starting.result()  # its start's error is this task's
        else:
            pod = self._start(task, outputs, phases)  # outside the lock: starting takes ~0.3 s
        pod.phases = phases
        return pod

    def give_back(self, pod: WarmPod) -> None:
        """Keeps the pod for the next task with the same settings (or closes it after close)."""
        pod.tasks_run += 1
        with self._lock:
            if self._closed:
                evicted: WarmPod | None = pod
            else:
                self._idle.setdefault(pod.key, []).append(pod)
                self._order.append(pod)
                evicted = self._evict_oldest() if len(self._order) > MAX_IDLE else None
        if evicted is not None:
            evicted.close()

    def _evict_oldest(self) -> WarmPod:
        """The least recently used idle pod, taken out of the pool (to be closed)."""
        oldest = self._order.pop(0)
        self._idle[oldest.key].remove(oldest)
        return oldest

    def close(self) -> None:
        """Closes every idle pod; pods in use are closed by their takers' give_back."""
        with self._lock:
            self._closed = True
            pods = [pod for idle in self._idle.values() for pod in idle]
            # Started ahead and never claimed (the run was cancelled before its first task);
            # a start still under way stays listed, and closes its own pod (prestart).
            pods += [starting.result() for starting in self._starting.values()
                     if starting.done() and starting.exception() is None]
            self._starting = {key: starting for key, starting in self._starting.items()
                              if not starting.done()}
            self._idle.clear()
            self._order.clear()
        errors = []
        for pod in pods:
            try:
                pod.close()
            except Exception as exc:  # noqa: BLE001 - remove the others before reporting
                errors.append(exc)
        if errors:
            raise errors[0]
