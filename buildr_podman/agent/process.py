"""Runs the task's process and turns its stdout/stderr into a stream of events as they come."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Output", "TaskProcess", "parse_user"]

READ_SIZE = 64 * 1024
KILL_GRACE_SECONDS = 2.0


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
                 timeout: float = 0.0) -> None:
        self._events: queue.Queue[Output | None] = queue.Queue(maxsize=256)
        self.timed_out = False
        self._deadline = time.monotonic() + timeout if timeout > 0 else None
        identity = parse_user(user)
        self._proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
            user=identity[0] if identity else None, group=identity[1] if identity else None,
            extra_groups=[] if identity else None)
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
            self._events.put(Output(stream, data))
        self._events.put(None)

    def output(self) -> Iterator[Output]:
        """Yields output until both pipes close, enforcing the timeout meanwhile."""
        open_pipes = len(self._readers)
        while open_pipes:
            try:
                item = self._events.get(timeout=self._wait_slice())
            except queue.Empty:
                self._check_deadline()
                continue
            if item is None:
                open_pipes -= 1
            else:
                yield item

    def wait(self) -> int:
        """The exit code; 128+N when killed by signal N, as a shell reports it."""
        while True:
            try:
                code = self._proc.wait(timeout=self._wait_slice())
                break
            except subprocess.TimeoutExpired:
                self._check_deadline()
        for reader in self._readers:
            reader.join()
        return 128 - code if code < 0 else code

    def kill_leftovers(self) -> None:
        """Kills what the task started in the background and left running."""
        self._signal_group(signal.SIGKILL)

    def kill(self) -> None:
        """Stops the whole process group: TERM first, KILL after a short grace."""
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

    def _wait_slice(self) -> float | None:
        if self._deadline is None:
            return None if self._proc.returncode is not None else 0.5
        return max(0.0, min(0.5, self._deadline - time.monotonic()))

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._deadline = None
            self.timed_out = True
            self.kill()
