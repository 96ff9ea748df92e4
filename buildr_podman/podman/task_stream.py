"""Consumes an agent's event stream: output to the observer, the archive into the out dir.

The archive is staged while its chunks arrive (S2 decoding and tar parsing pull from the
stream), so neither the compressed nor the decompressed archive is ever held whole; it lands
once the result has said whether the task succeeded (landing.py). The events come in the
host's own terms (agent_client.py converts them): no protobuf here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from buildr_podman.errors import AgentError
from buildr_podman.executor import RunObserver
from buildr_podman.landing import OutputLanding
from buildr_podman.model import Task, TaskResult
from buildr_podman.podman.agent_client import AgentEvent, LogLine, OutputChunk
from buildr_podman.s2 import S2Reader

__all__ = ["receive_events"]


def receive_events(task: Task, events: Iterator[AgentEvent], landing: OutputLanding,
                   observer: RunObserver) -> TaskResult:
    """Handles every event until the result, which is returned, with where the outputs
    landed."""
    for event in events:
        if isinstance(event, memoryview):
            archive = _ArchiveChunks(event, events)
            staged = landing.stage(task, S2Reader(archive), observer)
            try:
                archive.drain()  # tar stops reading at its end marker; the result follows
                if archive.result is None:
                    raise AgentError("the agent ended the archive without a result")
            except BaseException:
                staged.discard()
                raise
            result = archive.result
            # What came back is counted by the host as it extracted, never taken from the
            # agent's result: a task that controls the agent could claim anything.
            return replace(result, output_dir=landing.land(task, staged, result.succeeded,
                                                           observer),
                           files_returned=staged.stats.files + staged.stats.symlinks,
                           bytes_returned=staged.stats.bytes)
        if isinstance(event, OutputChunk):
            observer.output(task, event.stream, event.data)
        elif isinstance(event, LogLine):
            observer.log(task, event.message)
        elif isinstance(event, TaskResult):
            return replace(event, files_returned=0, bytes_returned=0)  # no archive came
    raise AgentError("the agent closed the stream without a result")


class _ArchiveChunks:
    """Iterates the archive's bytes: the first chunk, then chunks until the result event."""

    def __init__(self, first: memoryview, events: Iterator[AgentEvent]) -> None:
        self._first = first
        self._events = events
        self.result: TaskResult | None = None
        self._chunks = self._generate()

    def __iter__(self) -> Iterator[memoryview]:
        return self._chunks

    def drain(self) -> None:
        for _ in self._chunks:
            pass

    def _generate(self) -> Iterator[memoryview]:
        yield self._first
        for event in self._events:
            if isinstance(event, memoryview):
                yield event
            elif isinstance(event, TaskResult):
                self.result = event
                return
            # Output cannot follow the archive: the task has ended by then.
