"""The inputs of a container whose inputs are "copy", as the tar stream the agent extracts.

Where Podman cannot put the repository under a copy-on-write overlay (a file system it cannot
use as a lower layer), `container { inputs = "copy" }` copies it in instead, through the agent
that is running anyway: the same lean tar writer and S2 framing that bring changes back, in
gRPC messages, extracted in the container with the host's safe extraction. The workspace then
holds what the overlay would show: every mapped directory, the out dir included (later tasks
read their dependencies' outputs through it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from buildr_podman._protos.archive_wire import input_chunk_prefix
from buildr_podman.agent.packer import PackStats, pack_entries
from buildr_podman.model import Project, Task

__all__ = ["input_chunks", "input_entries"]


def input_chunks(project: Project, task: Task, stats: PackStats) -> Iterator[bytes]:
    """The S2-framed tar of the task's inputs, in bounded chunks that are serialized
    InputChunks (archive_wire.py), of stored blocks (a local socket gains nothing from
    compression)."""
    return pack_entries(input_entries(project, task), stats, compress=False,
                        message_prefix=input_chunk_prefix)


def input_entries(project: Project, task: Task) -> Iterator[tuple[str, str]]:
    """(host path, name in the workspace) of every directory, file and symlink of the inputs,
    each directory before what it holds. Symlinks are copied as links, never followed."""
    for source_rel, target_rel in task.input_mapping or (("", ""),):
        source = str((project.root / source_rel).resolve())
        prefix = target_rel.strip("/")
        prefix = "" if prefix in ("", ".") else prefix + "/"
        if prefix:
            yield source, prefix.rstrip("/")
        for directory, subdirectories, files in os.walk(source):
            subdirectories.sort()
            rel = os.path.relpath(directory, source)
            base = prefix if rel == "." else f"{prefix}{rel}/"
            for name in (*subdirectories, *sorted(files)):
                yield os.path.join(directory, name), base + name
