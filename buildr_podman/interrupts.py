"""Ctrl-C (and SIGTERM) during a run: a flag the scheduler polls instead of an exception anywhere.

A KeyboardInterrupt can land in any bytecode, including the `finally` that removes a pod; so
while tasks run, the signal only sets a flag, and the main thread stops the tasks and waits for
their own clean-up. Further presses are counted (the scheduler says it is still stopping) and
never cut a clean-up short; neither does a press while the run's warm pods are removed at its
end (runner._Run._close_session says which pod is going, and how to stop at once anyway).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Self

__all__ = ["SignalGuard"]

HANDLED = (signal.SIGINT, signal.SIGTERM)


class SignalGuard:
    """Installs the handlers for its `with` block (main thread only; elsewhere a no-op).

    While `raising` is true, SIGINT raises KeyboardInterrupt as usual: for phases that clean
    up by themselves when interrupted (opening a session).
    """

    def __init__(self) -> None:
        self.raising = False
        self.received = threading.Event()
        self.signal_number: int | None = None  #: the first signal received
        self.presses = 0  #: how many signals arrived
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for number in HANDLED:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)  # type: ignore[arg-type]
        self._previous.clear()

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as shells report a death by signal."""
        return 128 + (self.signal_number or signal.SIGINT)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.raising and number == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signal_number is None:
            self.signal_number = number
        self.presses += 1
        self.received.set()
