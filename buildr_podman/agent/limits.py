"""The task's resource limits as the agent sees them: the pids limit it applies itself where
cgroups cannot (podman/limits.py), and whether the task reached a limit, to say so.

Where Podman set cgroup limits (cgroup v2), the container's own cgroup counts what hit them
(pids.events, memory.events). Elsewhere the pids limit is RLIMIT_NPROC on the task's process:
the kernel refuses a fork beyond it but counts nothing, so the agent watches how many
threads the container holds and calls the limit reached when they came near it.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable, Mapping

__all__ = ["LIMIT_EXEC_NAME", "PIDS_LIMIT_VARIABLE", "LimitWatch", "limit_processes",
           "pids_limited"]

#: set by the host on the container when the agent must apply the pids limit itself
PIDS_LIMIT_VARIABLE = "BUILDR_TASK_PIDS_LIMIT"
# Sets a task's pids limit, then becomes the task (limit_exec.c): in the bundle beside the
# frozen agent's executable, when it was built with a C compiler at hand (agent_build.py).
LIMIT_EXEC_NAME = "buildr-limit-exec"
LIMIT_EXEC = os.path.join(os.path.dirname(sys.executable), LIMIT_EXEC_NAME)
CGROUP = "/sys/fs/cgroup"  # the container's own cgroup (v2, private cgroup namespace)
SAMPLE_SECONDS = 0.02  # between two counts: a count reads /proc of every process
# This share of the RLIMIT_NPROC limit seen at once counts as reaching it. The kernel counts
# the uid's threads in the whole user namespace of the user's rootless containers (Podman's
# own service among them, ~12 here), which the agent cannot see: a fork bomb under a limit of
# 64 peaked at 53 threads in its container.
NEAR_LIMIT = 0.75


def pids_limited(argv: list[str], env: dict[str, str], cwd: str, pids_limit: int,
                 identity: tuple[int, int] | None,
                 ) -> tuple[list[str], Callable[[], None] | None]:
    """The argv to start, and Popen's preexec_fn, that give the task its pids limit
    (RLIMIT_NPROC; 0: none). Through LIMIT_EXEC when the bundle has it: a preexec_fn makes
    CPython fork the agent instead of vfork'ing it, ~7 ms of page-table copying and
    copy-on-write faults per task. A preexec_fn otherwise, and for a task with its own `user`
    (a uid change forks anyway), or whose program is not found as an executable or a script
    (so that it fails to start as it always did)."""
    if not pids_limit:
        return argv, None
    program = None if identity or not argv else _program(argv[0], env, cwd)
    if program is None or not os.access(LIMIT_EXEC, os.X_OK):
        return argv, limit_processes(pids_limit)
    return [LIMIT_EXEC, str(pids_limit), program, *argv], None


def _program(name: str, env: dict[str, str], cwd: str) -> str | None:
    """The file that `name` runs, found as Popen finds it (the PATH of the task's environment;
    relative to cwd), when it can be exec'd as it is: an ELF executable, or a script with #!."""
    candidates = [name] if "/" in name else [os.path.join(d, name) for d in os.get_exec_path(env)]
    for candidate in candidates:
        path = os.path.join(cwd, candidate)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path if _starts_as(path, (b"\x7fELF", b"#!")) else None
    return None


def _starts_as(path: str, magics: tuple[bytes, ...]) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(4).startswith(magics)
    except OSError:
        return False


def limit_processes(limit: int) -> Callable[[], None]:
    """For Popen's preexec_fn: RLIMIT_NPROC on the task's process (and so its children), not
    on the agent, whose threads must still start when the task has used up its processes."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    return apply


class LimitWatch:
    """Looks at the container's limits around one task; verdict() says which one it hit."""

    def __init__(self, environment: Mapping[str, str]) -> None:
        value = environment.get(PIDS_LIMIT_VARIABLE, "")
        self.rlimit = int(value) if value.isdigit() else 0  # 0: cgroups (or nothing) limit
        self._pids_max_events = _counter("pids.events", "max")
        self._oom_kills = _counter("memory.events", "oom_kill")
        self._peak = 0
        self._next_sample = 0.0

    def sample(self) -> None:
        """Counts the container's processes (RLIMIT_NPROC mode only): called while the task
        runs and before its processes are killed."""
        now = time.monotonic()
        if self.rlimit and now >= self._next_sample:
            self._next_sample = now + SAMPLE_SECONDS
            self._peak = max(self._peak, _threads())

    def verdict(self) -> str:
        """One line for a limit the task reached, else ""."""
        if _counter("memory.events", "oom_kill") > self._oom_kills:
            return ("the task ran out of memory: the kernel killed one of its processes at the "
                    "container's memory limit (raise memory in container { })")
        cgroup_hit = _counter("pids.events", "max") > self._pids_max_events
        if cgroup_hit or (self.rlimit and self._peak >= NEAR_LIMIT * self.rlimit):
            limit = self.rlimit or _read("pids.max")
            return (f"the task reached its limit of {limit} processes, so a fork failed (a fork "
                    "bomb, or raise pids_limit in container { })")
        return ""


def _threads() -> int:
    """Threads in the container, the agent's own included: RLIMIT_NPROC counts threads, of
    every process of the uid (the agent runs as the task's uid unless `user` is set)."""
    count = 0
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0
    for name in names:
        if name.isdigit():
            try:
                count += len(os.listdir(f"/proc/{name}/task"))
            except OSError:
                pass  # exited meanwhile
    return count


def _counter(name: str, key: str) -> int:
    """A counter of a cgroup v2 events file; 0 where there is none (cgroup v1)."""
    for line in _read(name).splitlines():
        field, _, value = line.partition(" ")
        if field == key and value.strip().isdigit():
            return int(value)
    return 0


def _read(name: str) -> str:
    try:
        with open(os.path.join(CGROUP, name), encoding="utf-8") as file:
            return file.read().strip()
    except OSError:
        return ""
