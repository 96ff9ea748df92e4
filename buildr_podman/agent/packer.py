"""Packs paths into a tar stream framed as S2, in bounded messages: the changes the agent sends
back."""

from __future__ import annotations

import os
import queue
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from buildr_podman.agent.access import ACCESS
from buildr_podman.agent.tarwriter import FLUSH_SIZE, TarWriter
from buildr_podman.s2 import STREAM_IDENTIFIER, Frame, S2Encoder

__all__ = ["PackStats", "pack_changes", "pack_entries"]

Prefix = Callable[[int], bytes] | None

# Tar bytes per S2 block and so per message (far below gRPC's 4 MiB limit): what the tar writer
# hands over at once, so that each of its writes is framed as one whole block.
CHUNK_SIZE = FLUSH_SIZE
QUEUE_DEPTH = 8  # messages in flight between the packing thread and the stream: bounds memory


@dataclass
class PackStats:
    files: int = 0
    bytes: int = 0


class _MessageQueueWriter:
    """The tar writer's sink: frames what it receives as S2 and puts it on a bounded queue as
    messages ready for gRPC (bytes, behind `message_prefix(their length)` when given). A
    message holds whole S2 chunks only: a chunk split between two messages must be joined
    (copied) by the receiver; whole, it is decoded where it lies.

    Each byte is copied once, from where the tar writer has it straight into its message, in
    this thread: a write's frames are in messages before write() returns, since the tar writer
    reuses its block then (io's contract). Messages were built in buffers of the packer's own
    and copied again into bytes by the thread that sends them: 256 MiB more copying for a
    256 MiB file. Freed messages stay warm for the next ones (malloc_tuning.py).
    """

    def __init__(self, messages: queue.Queue[bytes | BaseException | None], compress: bool,
                 message_prefix: Prefix = None) -> None:
        self.messages = messages
        self.cancelled = threading.Event()  # set by the consumer when it stops reading
        self._encoder = S2Encoder(CHUNK_SIZE, compress)
        self._prefix = message_prefix
        self._capacity = len(STREAM_IDENTIFIER) + self._encoder.max_frame_size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        with memoryview(data) as view:
            self._send(self._encoder.encode_frames(view))
            return view.nbytes

    def finish(self) -> None:
        """Frames what the encoder still holds and hands over the last message."""
        self._send(self._encoder.flush_frames())

    def _send(self, frames: list[Frame]) -> None:
        """The frames, in as few messages as hold them (one chunk fills a message)."""
        parts: list[bytes | memoryview] = []
        size = 0
        for frame in frames:
            frame_size = sum(len(part) for part in frame)
            if parts and size + frame_size > self._capacity:
                self._put(parts, size)
                parts, size = [], 0
            parts += frame
            size += frame_size
        if parts:
            self._put(parts, size)

    def _put(self, parts: list[bytes | memoryview], size: int) -> None:
        if self.cancelled.is_set():
            raise _Cancelled  # also in the middle of a big file
        if self._prefix is not None:
            parts.insert(0, self._prefix(size))
        self.messages.put(b"".join(parts))


def pack_changes(root: str, paths: Iterable[str], stats: PackStats, *,
                 compress: bool = True, message_prefix: Prefix = None) -> Iterator[bytes]:
    """Yields the S2-compressed tar of `paths` (relative to root, and so named) as messages."""
    prefix = os.path.join(root, "")  # root + "/" + rel is a third of os.path.join's cost
    return pack_entries(((prefix + rel, rel) for rel in paths), stats, compress=compress,
                        message_prefix=message_prefix)


def pack_entries(entries: Iterable[tuple[str, str]], stats: PackStats, *,
                 compress: bool = True, message_prefix: Prefix = None) -> Iterator[bytes]:
    """Yields the S2-compressed tar of (path, name in the archive) entries as messages: each
    is whole S2 chunks, preceded by `message_prefix(their length)` when that is given (what
    serializes them as a protobuf message, see archive_wire.py).

    The tar is written by a thread into a small bounded queue, so a 256 MiB output never sits
    in memory whole; `entries` is consumed by that thread (lazily: a ChangeResolution finds
    paths while earlier ones are sent), and no longer once this iterator is closed or
    exhausted; `stats` is complete once it is exhausted.
    """
    messages: queue.Queue[bytes | BaseException | None] = queue.Queue(QUEUE_DEPTH)
    sink = _MessageQueueWriter(messages, compress, message_prefix)
    writer = threading.Thread(target=_write_tar, args=(entries, stats, sink),
                              name="packer", daemon=True)
    writer.start()
    ended = False  # the writer has handed over its last item (None or its exception)
    try:
        while (item := messages.get()) is not None:
            if isinstance(item, BaseException):
                ended = True
                raise item
            yield item
        ended = True
    finally:
        if not ended:  # the consumer left early: stop the writer, unblocking its put()
            sink.cancelled.set()
            while writer.is_alive():
                try:
                    messages.get(timeout=0.01)
                except queue.Empty:
                    pass
        writer.join()


class _Cancelled(Exception):
    """The consumer stopped reading: the packing thread stops taking entries and writing."""


def _write_tar(entries: Iterable[tuple[str, str]], stats: PackStats,
               sink: _MessageQueueWriter) -> None:
    try:
        tar = TarWriter(sink)
        for path, name in entries:
            if sink.cancelled.is_set():
                return
            _add(tar, path, name, stats)
        tar.close()
        sink.finish()
        sink.messages.put(None)
    except _Cancelled:
        return
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
        sink.messages.put(exc)


def _add(tar: TarWriter, path: str, rel: str, stats: PackStats) -> None:
    stored = tar.add_regular(path, rel)
    if stored is not None:
        stats.bytes += stored
        stats.files += 1
        return
    try:
        st = ACCESS.lstat(path)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)
                or stat.S_ISDIR(st.st_mode)):
            return  # devices, FIFOs, sockets never leave the container
        stats.bytes += tar.add(path, rel, st)
    except FileNotFoundError:
        return  # deleted after tracking ended; nothing to return
    except PermissionError as exc:
        ACCESS.problem(path, exc)  # that file's problem: the others still come back
        return
    if not stat.S_ISDIR(st.st_mode):
        stats.files += 1
