"""The worker materialises an input tree exactly (contents, modes, symlinks as links), and a
hostile tree (odd names, a name twice, a damaged blob) is refused before anything escapes."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import pytest

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.cache.remote import RemoteCorrupt
from buildr_podman.cache.store import Store
from buildr_podman.worker.inputs import ActionInputs, BadInput
from buildr_podman.worker.properties import Refused


class FakeCas:
    """RemoteCache's fetch_blobs over a dict: what a CAS holds."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.fetched = 0

    def add(self, data: bytes) -> re_pb2.Digest:
        digest = re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
        self.blobs[digest.hash] = data
        return digest

    def fetch_blobs(self, digests: Iterable[re_pb2.Digest], store: Store) -> None:
        for digest in digests:
            if store.has_blob(digest.hash):
                continue
            if digest.hash not in self.blobs:
                raise RemoteCorrupt(f"blob {digest.hash[:12]} could not be read (missing)")
            self.fetched += 1
            store.put_blob(self.blobs[digest.hash])


def file_node(cas: FakeCas, name: str, data: bytes, mode: int) -> re_pb2.FileNode:
    node = re_pb2.FileNode(name=name, digest=cas.add(data), is_executable=bool(mode & 0o111))
    node.node_properties.unix_mode.value = mode
    return node


def directory(cas: FakeCas, message: re_pb2.Directory) -> re_pb2.DirectoryNode:
    return re_pb2.DirectoryNode(digest=cas.add(message.SerializeToString(deterministic=True)))


def tree(cas: FakeCas) -> re_pb2.Digest:
    sub = re_pb2.Directory(files=[file_node(cas, "run.sh", b"#!/bin/sh\necho hi\n", 0o750)])
    node = directory(cas, sub)
    node.name = "bin"
    root = re_pb2.Directory(files=[file_node(cas, "a.txt", b"alpha\n", 0o640)],
                            directories=[node],
                            symlinks=[re_pb2.SymlinkNode(name="escape", target="/etc/passwd")])
    return cas.add(root.SerializeToString(deterministic=True))


def inputs(cas: FakeCas, tmp_path: Path) -> ActionInputs:
    return ActionInputs(cas, Store(tmp_path / "store"))  # type: ignore[arg-type]


def test_the_tree_is_materialised_with_contents_modes_and_links(tmp_path: Path) -> None:
    cas = FakeCas()
    root = tree(cas)
    reader = inputs(cas, tmp_path)
    directories = reader.directories(root)
    assert len(directories) == 2
    for attempt in range(2):  # the second lease fetches nothing again
        target = tmp_path / f"out{attempt}"
        reader.materialise(root.hash, directories, target)
        assert (target / "a.txt").read_bytes() == b"alpha\n"
        assert stat.S_IMODE(os.stat(target / "a.txt").st_mode) == 0o640
        assert stat.S_IMODE(os.stat(target / "bin" / "run.sh").st_mode) == 0o750
        assert os.readlink(target / "escape") == "/etc/passwd"
    assert cas.fetched == 4


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "nul\0"])
def test_a_name_that_is_no_file_name_is_refused(tmp_path: Path, name: str) -> None:
    cas = FakeCas()
    root = cas.add(re_pb2.Directory(files=[file_node(cas, name, b"x", 0o644)])
                   .SerializeToString(deterministic=True))
    reader = inputs(cas, tmp_path)
    with pytest.raises(Refused, match="not a file name"):
        reader.materialise(root.hash, reader.directories(root), tmp_path / "out")
    assert not (tmp_path / "x").exists()


def test_a_name_given_twice_is_refused(tmp_path: Path) -> None:
    """A symlink `d` to / and a directory `d` would otherwise let files land through it."""
    cas = FakeCas()
    sub = directory(cas, re_pb2.Directory(files=[file_node(cas, "f", b"x", 0o644)]))
    sub.name = "d"
    root = cas.add(re_pb2.Directory(directories=[sub], symlinks=[
        re_pb2.SymlinkNode(name="d", target=str(tmp_path))]).SerializeToString())
    reader = inputs(cas, tmp_path)
    with pytest.raises(Refused, match="twice"):
        reader.materialise(root.hash, reader.directories(root), tmp_path / "out")
    assert not (tmp_path / "f").exists()


def test_a_blob_missing_from_the_cas_is_a_bad_input(tmp_path: Path) -> None:
    cas = FakeCas()
    root = tree(cas)
    reader = inputs(cas, tmp_path)
    directories = reader.directories(root)
    del cas.blobs[hashlib.sha256(b"alpha\n").hexdigest()]
    with pytest.raises(BadInput, match="could not be read"):
        reader.materialise(root.hash, directories, tmp_path / "out")


def test_a_blob_damaged_in_the_workers_store_is_never_an_input(tmp_path: Path) -> None:
    cas = FakeCas()
    root = tree(cas)
    reader = inputs(cas, tmp_path)
    directories = reader.directories(root)
    reader.materialise(root.hash, directories, tmp_path / "first")
    blob = reader.store.blob_path(hashlib.sha256(b"alpha\n").hexdigest())
    blob.write_bytes(b"ALPHA\n")
    with pytest.raises(BadInput, match="damaged"):
        reader.materialise(root.hash, directories, tmp_path / "second")


def test_a_message_that_is_not_one_is_a_bad_input(tmp_path: Path) -> None:
    cas = FakeCas()
    digest = cas.add(b"\xff\xff not a protobuf")
    with pytest.raises(BadInput, match="not a Command"):
        inputs(cas, tmp_path).message(digest, re_pb2.Command)
