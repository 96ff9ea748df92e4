"""Runs the task's process and turns its stdout/stderr into a stream of events as they come."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from buildr_podman.agent.limits import pids_limited

__all__ = ["Output", "TaskProcess", "parse_user"]

READ_SIZE = 64 * 1024
KILL_GRACE_SECONDS = 2.0
POLL_SECONDS = 0.1  # how often output() looks at the deadline and the task's process
# After the task's process exits, what it left in the background (still holding the output
# pipes) may finish writing for this long; then it is killed, and if the pipes stay open even
# so (a process that escaped), the output is abandoned after the same time again.
DRAIN_SECONDS = 0.5


@dataclass(frozen=True)
class Output:
    stream: str  # "stdout" or "stderr"
    data: bytes


def parse_user(spec: str) -> tuple[int, int] | None:
    """"uid[:gid]" -> (uid, gid); "" -> None (keep the agent's own identity)."""
    if not spec:
        return None
    uid, _, gid = spec.partition(":")
    return int(uid), int(gid or uid)


class TaskProcess:
    """One task process in its own session, so that a timeout or cancel kills all of it."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, user: str = "",
                 timeout: float = 0.0, pids_limit: int = 0,
                 sample: Callable[[], None] | None = None) -> None:
        """`pids_limit`: RLIMIT_NPROC for the task (0: none); `sample` is called at every
        look at the task, and before its processes are killed (agent/limits.py)."""
        self._sample = sample or (lambda: None)
        self._events: queue.Queue[Output | None] = queue.Queue(maxsize=256)
        self.timed_out = False
        self._deadline = time.monotonic() + timeout if timeout > 0 else None
        identity = parse_user(user)
        argv, limit_in_child = pids_limited(argv, env, cwd, pids_limit, identity)
        self._proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
            user=identity[0] if identity else None, group=identity[1] if identity else None,
            extra_groups=[] if identity else None,
            # In the child between fork and exec, with the agent's gRPC threads about: safe
            # here, as it only makes one system call (setrlimit), and glibc's fork resets the
            # allocator's locks. Popen has no rlimit argument, and limiting the agent itself
            # would stop its own threads from starting once the task used up the limit.
            preexec_fn=limit_in_child)  # noqa: PLW1509
        self._exited_at: float | None = None
        self._leftovers_killed = False
        self._abandoned = False  # the pipes outlived every kill: stop reading them
        self._readers = [self._start_reader(self._proc.stdout, "stdout"),
                         self._start_reader(self._proc.stderr, "stderr")]

    def _start_reader(self, pipe: object, stream: str) -> threading.Thread:
        thread = threading.Thread(target=self._read, args=(pipe, stream), daemon=True,
                                  name=f"read-{stream}")
        thread.start()
        return thread

    def _read(self, pipe: object, stream: str) -> None:
        fd = pipe.fileno()  # type: ignore[attr-defined]
        while data := os.read(fd, READ_SIZE):
            if not self._abandoned:
                self._events.put(Output(stream, data))
        # A warm agent runs many tasks: each one's pipes are closed, not left to the collector.
        pipe.close()  # type: ignore[attr-defined]
        self._events.put(None)

    def output(self) -> Iterator[Output]:
        """Yields output until both pipes close, enforcing the timeout meanwhile.

        The task is over when its own process is: a background job still holding the pipes
        (`server &`, or `setsid daemon &`, which a timeout's group kill misses) gets
        DRAIN_SECONDS to finish writing, then is killed; it cannot keep the task running.
        """
        open_pipes = len(self._readers)
        while open_pipes:
            try:
                item = self._events.get(timeout=self._wait_slice())
            except queue.Empty:
                self._check_deadline()
                if self._background_holds_output():
                    return
                continue
            if item is None:
                open_pipes -= 1
            else:
                yield item
            # Also while output keeps coming: a task that prints without pause is still timed
            # out, and a fork bomb's flood of "can't fork" is when its processes peak.
            self._check_deadline()

    def wait(self) -> int:
        """The exit code; 128+N when killed by signal N, as a shell reports it."""
        while True:
            try:
                code = self._proc.wait(timeout=self._wait_slice())
                break
            except subprocess.TimeoutExpired:
                self._check_deadline()
        if not self._abandoned:
            for reader in self._readers:
                reader.join()
        return 128 - code if code < 0 else code

    def kill_leftovers(self) -> None:
        """Kills what the task started in the background and left running: its process group
        and, when the agent is the container's init, every other process of the container (a
        `setsid` or double-forked daemon leaves the group, never the container)."""
        self._sample()
        self._signal_group(signal.SIGKILL)
        if os.getpid() == 1:
            _kill_all_but_init()

    def _background_holds_output(self) -> bool:
        """True when the output should no longer be waited for (see output())."""
        if self._proc.poll() is None:
            return False
        now = time.monotonic()
        if self._exited_at is None:
            self._exited_at = now
        if now - self._exited_at < DRAIN_SECONDS:
            return False
        if not self._leftovers_killed:
            self._leftovers_killed = True
            self.kill_leftovers()
            return False
        self._abandoned = now - self._exited_at >= 2 * DRAIN_SECONDS
        return self._abandoned

    def kill(self) -> None:
        """Stops the whole process group: TERM first, KILL after a short grace."""
        self._sample()
        self._signal_group(signal.SIGTERM)
        try:
            self._proc.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self._proc.pid, signum)
        except ProcessLookupError:
            pass

    def _wait_slice(self) -> float:
        if self._deadline is None:
            return POLL_SECONDS
        return max(0.0, min(POLL_SECONDS, self._deadline - time.monotonic()))

    def _check_deadline(self) -> None:
        self._sample()
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._deadline = None
            self.timed_out = True
            self.kill()


def _kill_all_but_init() -> None:
    """As PID 1 of a container: SIGKILL to every other process in it, then reap the zombies
    that are ready (orphans become init's children; later calls reap the rest)."""
    try:
        os.kill(-1, signal.SIGKILL)  # from init: everything in the namespace but itself
    except ProcessLookupError:
        pass  # nothing else is running
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
