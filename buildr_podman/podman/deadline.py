"""The host's own deadline for a task: a task whose agent stops answering ends, never hangs.

The agent enforces `timeout` (it kills the task's process group), but it shares the container
with the task, which can freeze it (a task with CAP_SYS_PTRACE, a full disk) or starve it. So
the host watches the call too: once the task's timeout and GRACE_SECONDS have passed without
the task having ended (no archive data, no result), or once the archive stops moving for
STALL_SECONDS, it cancels the call; the executor then removes the pod without asking the agent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from buildr_podman.errors import AgentError

__all__ = ["GRACE_SECONDS", "STALL_SECONDS", "AgentTimeout", "HostDeadline"]

# The agent's own kill takes up to 2 s (TERM, then KILL) and 1 s of draining; then the change
# set is resolved (a rescan of a large tree may take seconds). Past this it is not coming.
GRACE_SECONDS = 10.0
STALL_SECONDS = 30.0  # once the archive flows: the longest silence between two of its chunks


class AgentTimeout(AgentError):
    """The host's deadline for a task passed: its pod must be removed without asking it."""


class HostDeadline:
    """Calls `cancel` from a thread of its own when the task overruns (see the module)."""

    def __init__(self, timeout: float, cancel: Callable[[], object]) -> None:
        self.timeout = timeout
        self.expired = False
        self._cancel = cancel
        self._limit = time.monotonic() + timeout + GRACE_SECONDS
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="host-deadline", daemon=True)
        self._thread.start()

    def task_ended(self) -> None:
        """The agent sends the task's archive or result: from now on only silence counts."""
        self._limit = time.monotonic() + STALL_SECONDS

    def stop(self) -> None:
        self._done.set()

    def message(self) -> str:
        return (f"the task did not end within its timeout of {self.timeout:g} s and "
                f"{GRACE_SECONDS:g} s more, and its agent stopped answering: the host "
                "removed the pod (did the task stop or trace the agent?)")

    def _watch(self) -> None:
        while not self._done.wait(max(0.0, self._limit - time.monotonic())):
            if time.monotonic() >= self._limit:
                self.expired = True
                self._cancel()
                return
