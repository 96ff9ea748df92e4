"""What keeps the task from taking the agent over: the agent is not dumpable.

The task runs with the agent's uid unless it sets `user` (the agent is the container's init;
giving every task another uid would break tasks that need root in their image). Same uid
means the kernel would let the task ptrace the agent, read its memory (/proc/1/mem, the next
task's secrets) or freeze it. A process that is not dumpable (prctl PR_SET_DUMPABLE 0) can
be ptraced, and its /proc files read, only with CAP_SYS_PTRACE in its user namespace, which
Podman does not give a container unless asked (`privileged`, or `capabilities { add =
["SYS_PTRACE"] }`): those tasks never give their pod back for another task (warm_pods.py).
The flag is inherited by fork() and reset by execve(), so the task's own processes stay
dumpable (core dumps, debuggers inside the task work as before). The host still reaches the
agent's socket through /proc/PID/root: it owns the container's user namespace.

What this leaves: a task with CAP_SYS_PTRACE (see above) can still freeze or rewrite the agent
of its own pod, and any task may stop the agent's work by other means (filling the disk, say).
The host does not rely on the agent to end a task: it enforces each timeout itself
(podman/deadline.py).
"""

from __future__ import annotations

import ctypes

__all__ = ["forbid_ptrace"]

PR_SET_DUMPABLE = 4


def forbid_ptrace() -> None:
    """Makes this process not dumpable; raises OSError if the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)  # the C library this process already has
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "prctl(PR_SET_DUMPABLE, 0) failed")
