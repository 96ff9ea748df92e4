"""A leased Action's messages and input tree, from the cluster's CAS into a directory.

Every blob goes through the worker's local store (cache/store.py), fetched by the remote
cache's code (cache/remote.py: batches, ByteStream for large blobs, each checked against its
digest on arrival), so the files a worker has seen once are not fetched again for the next
lease. Materialising copies each file out of the store, hashing it again on the way (a blob
damaged on the worker's disk is an error, never a wrong input), with the mode the input tree
records (`unix_mode`, else 0755/0644 by is_executable); directories are 0755 (the key records
no directory modes).

A hostile tree cannot write outside the target: names are checked (no "", ".", "..", "/" or
NUL, no name twice in one directory), everything is created new (O_EXCL, O_NOFOLLOW) in
directories made here, and symlinks are made last, as links, never followed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.cache.remote import RemoteCache
from buildr_podman.cache.store import Store
from buildr_podman.worker.properties import Refused

__all__ = ["ActionInputs", "BadInput"]

COPY_CHUNK = 1 << 20
M = TypeVar("M", bound=Message)


class BadInput(Exception):
    """A blob of the Action is missing from the CAS or not what its digest says."""


class ActionInputs:
    """Reads one lease's Action, Command and input tree (the store is shared by leases)."""

    def __init__(self, remote: RemoteCache, store: Store) -> None:
        self.remote = remote
        self.store = store

    def message(self, digest: re_pb2.Digest, kind: type[M]) -> M:
        """The message of that digest from the CAS. Raises BadInput, RemoteUnavailable."""
        return self.messages([digest], kind)[digest.hash]

    def messages(self, digests: list[re_pb2.Digest], kind: type[M]) -> dict[str, M]:
        from buildr_podman.cache.remote import RemoteCorrupt

        try:
            self.remote.fetch_blobs(digests, self.store)
        except RemoteCorrupt as exc:
            raise BadInput(str(exc)) from exc
        found = {}
        for digest in digests:
            data = self.store.get_blob(digest.hash)  # verified
            if data is None or len(data) != digest.size_bytes:
                raise BadInput(f"blob {digest.hash[:12]} is damaged in the worker's store")
            try:
                found[digest.hash] = kind.FromString(data)
            except DecodeError as exc:
                raise BadInput(f"blob {digest.hash[:12]} is not a {kind.__name__}") from exc
        return found

    def directories(self, root: re_pb2.Digest) -> dict[str, re_pb2.Directory]:
        """Every Directory message of the tree, by hash, fetched a level at a time."""
        found: dict[str, re_pb2.Directory] = {}
        level = [root]
        while level:
            fetched = self.messages(level, re_pb2.Directory)
            found.update(fetched)
            level = list({d.digest.hash: d.digest for directory in fetched.values()
                          for d in directory.directories if d.digest.hash not in found}.values())
        return found

    def materialise(self, root: str, directories: Mapping[str, re_pb2.Directory],
                    target: Path) -> None:
        """Makes target (new) hold the tree of Directory `root`. Raises BadInput, Refused,
        RemoteUnavailable."""
        files = {f.digest.hash: f.digest for _, directory in _walk(root, directories, "")
                 for f in directory.files}
        from buildr_podman.cache.remote import RemoteCorrupt

        try:
            self.remote.fetch_blobs(list(files.values()), self.store)
        except RemoteCorrupt as exc:
            raise BadInput(str(exc)) from exc
        target.mkdir(mode=0o755)
        for rel, directory in _walk(root, directories, ""):
            here = target / rel if rel else target
            for node in directory.files:
                self._copy_file(node, here / node.name)
            for sub in directory.directories:
                (here / sub.name).mkdir(mode=0o755)
            for link in directory.symlinks:
                os.symlink(link.target, here / link.name)

    def _copy_file(self, node: re_pb2.FileNode, path: Path) -> None:
        mode = node.node_properties.unix_mode.value if node.node_properties.HasField(
            "unix_mode") else (0o755 if node.is_executable else 0o644)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        sha = hashlib.sha256()
        size = 0
        try:
            with open(self.store.blob_path(node.digest.hash), "rb") as source:
                while chunk := source.read(COPY_CHUNK):
                    sha.update(chunk)
                    size += len(chunk)
                    os.write(fd, chunk)  # a regular file: writes it whole
            os.fchmod(fd, mode & 0o7777)
        except FileNotFoundError as exc:
            raise BadInput(f"blob {node.digest.hash[:12]} left the worker's store") from exc
        finally:
            os.close(fd)
        if sha.hexdigest() != node.digest.hash or size != node.digest.size_bytes:
            raise BadInput(f"blob {node.digest.hash[:12]} is damaged in the worker's store")


def _walk(root: str, directories: Mapping[str, re_pb2.Directory],
          rel: str) -> Iterator[tuple[str, re_pb2.Directory]]:
    """(path relative to the root, Directory), parents first; names checked."""
    pending = [(rel, root)]
    while pending:
        where, digest = pending.pop()
        directory = directories.get(digest)
        if directory is None:
            raise BadInput(f"Directory {digest[:12]} of the input tree is missing")
        _check_names(directory, where)
        yield where, directory
        pending.extend((f"{where}/{d.name}" if where else d.name, d.digest.hash)
                       for d in directory.directories)


def _check_names(directory: re_pb2.Directory, where: str) -> None:
    names = [*(f.name for f in directory.files), *(d.name for d in directory.directories),
             *(s.name for s in directory.symlinks)]
    for name in names:
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise Refused(f"the input tree has an entry named {name!r} in "
                          f"{where or 'its root'}/: not a file name")
    if len(set(names)) != len(names):
        raise Refused(f"the input tree names an entry twice in {where or 'its root'}/")
