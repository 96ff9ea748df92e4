"""Copies a task's inputs into the workspace, for containers whose inputs are "copy".

Where Podman cannot put the repository under a copy-on-write overlay, the host sends it as a tar
stream in S2 framing over the PutInputs call. It is extracted with the host's own safe,
all-or-nothing extraction: the workspace's contents are replaced only once the whole archive
was good. The workspace itself stays: it is a volume's mount point (see podman/pods.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from buildr_podman._protos.buildr.remote.v1 import agent_pb2
from buildr_podman.archive.extract import ExtractStats, extract_tar_stream_into
from buildr_podman.errors import ArchiveError
from buildr_podman.s2 import S2Reader

__all__ = ["receive_inputs"]


def receive_inputs(chunks: Iterator[agent_pb2.InputChunk | memoryview]) -> ExtractStats:
    """Extracts the streamed archive into the workspace named by its first chunk; the others
    are InputChunks or (as service.py hands them over) the data of one."""
    first = next(chunks, None)
    if not isinstance(first, agent_pb2.InputChunk) or not first.workspace.startswith("/"):
        raise ArchiveError("the inputs stream names no absolute workspace in its first chunk")
    return extract_tar_stream_into(S2Reader(_data(first, chunks)), Path(first.workspace))


def _data(first: agent_pb2.InputChunk,
          rest: Iterator[agent_pb2.InputChunk | memoryview]) -> Iterator[bytes | memoryview]:
    yield first.data
    for chunk in rest:
        yield chunk if isinstance(chunk, memoryview) else chunk.data
