"""Consumes an agent's event stream: output to the observer, the archive into the out dir.

The archive is extracted while its chunks arrive (S2 decoding and tar parsing pull from the
stream), so neither the compressed nor the decompressed archive is ever held whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from buildr_podman.archive.extract import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ENTRIES,
    ExtractStats,
    extract_tar_stream,
)
from buildr_podman.errors import AgentError
from buildr_podman.executor import RunObserver
from buildr_podman.model import Task, TaskOutcome
from buildr_podman.s2 import S2Reader

if TYPE_CHECKING:
    from buildr_podman._protos.buildr.remote.v1 import agent_pb2

__all__ = ["receive_events"]

STREAM_NAMES = {1: "stdout", 2: "stderr"}


def receive_events(task: Task, events: Iterator[agent_pb2.RunEvent | memoryview],
                   output_dir: Path, observer: RunObserver,
                   anchor: Path | None = None, replace_unmarked: bool = True) -> TaskOutcome:
    """Handles every event until the result, which becomes the returned outcome. Archive
    chunks may come as their data alone (AgentClient.run). The archive goes to output_dir,
    reached from `anchor` (the repository root) without following a symlink, and replaces
    one there that this tool did not make only if `replace_unmarked`."""
    for event in events:
        data = _archive_data(event)
        if data is not None:
            archive = _ArchiveChunks(data, events)
            stats = extract_tar_stream(
                S2Reader(archive), output_dir, anchor=anchor,
                replace_unmarked=replace_unmarked,
                max_bytes=task.max_return_bytes or DEFAULT_MAX_BYTES,
                max_entries=task.max_return_entries or DEFAULT_MAX_ENTRIES)
            archive.drain()  # tar stops reading at its end marker; the result follows
            if archive.result is None:
                raise AgentError("the agent ended the archive without a result")
            return _outcome(task, archive.result, output_dir, stats)
        assert not isinstance(event, memoryview)  # every view is archive data
        kind = event.WhichOneof("event")
        if kind == "output":
            observer.output(task, STREAM_NAMES.get(event.output.stream, "stdout"),
                            event.output.data)
        elif kind == "log":
            observer.log(task, event.log.message)
        elif kind == "result":
            return _outcome(task, event.result, None, ExtractStats())
    raise AgentError("the agent closed the stream without a result")


class _ArchiveChunks:
    """Iterates the archive's bytes: the first chunk, then chunks until the result event."""

    def __init__(self, first: memoryview,
                 events: Iterator[agent_pb2.RunEvent | memoryview]) -> None:
        self._first = first
        self._events = events
        self.result: agent_pb2.TaskResult | None = None
        self._chunks = self._generate()

    def __iter__(self) -> Iterator[memoryview]:
        return self._chunks

    def drain(self) -> None:
        for _ in self._chunks:
            pass

    def _generate(self) -> Iterator[memoryview]:
        yield self._first
        for event in self._events:
            data = _archive_data(event)
            if data is not None:
                yield data
            elif not isinstance(event, memoryview) and event.HasField("result"):
                self.result = event.result
                return
            # Output cannot follow the archive: the task has ended by then.


def _archive_data(event: agent_pb2.RunEvent | memoryview) -> memoryview | None:
    """An archive chunk's data, whether it came parsed by protobuf or as a view."""
    if isinstance(event, memoryview):
        return event
    return memoryview(event.archive.data) if event.HasField("archive") else None


def _outcome(task: Task, result: agent_pb2.TaskResult, output_dir: Path | None,
             extracted: ExtractStats) -> TaskOutcome:
    """The outcome: the figures of what came back counted by the host as it extracted, never
    taken from the agent's result (a task that controls the agent could claim anything)."""
    return TaskOutcome(task=task.name, exit_code=result.exit_code, error=result.error,
                       files_returned=extracted.files + extracted.symlinks,
                       bytes_returned=extracted.bytes,
                       deleted_paths=tuple(result.deleted_paths), tracking=result.tracking,
                       timed_out=result.timed_out, duration_seconds=result.duration_seconds,
                       output_dir=output_dir, watched_directories=result.watched_directories,
                       tracking_setup_seconds=result.tracking_setup_seconds,
                       tracking_resolve_seconds=result.tracking_resolve_seconds)
