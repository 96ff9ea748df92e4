"""Another client's Action gets REAPI's own outputs: the files, symlinks and directories its
Command declares, each with its blobs in the store; a declared output not written is left out."""

from __future__ import annotations

import os
from pathlib import Path

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.cache.store import Store
from buildr_podman.cache.task_cache import OutputRecorder
from buildr_podman.model import ContainerSpec, Task, TaskResult
from buildr_podman.worker.outputs import declared_result


class Quiet:
    def output(self, task: Task, stream: str, data: bytes) -> None:
        pass

    def log(self, task: Task, message: str) -> None:
        pass


def test_declared_files_links_and_directories_come_back(tmp_path: Path) -> None:
    landed = tmp_path / "out" / "task"
    (landed / "pkg" / "gen" / "sub").mkdir(parents=True)
    (landed / "pkg" / "a.o").write_bytes(b"object")
    (landed / "pkg" / "a.o").chmod(0o755)
    (landed / "pkg" / "gen" / "sub" / "x.h").write_text("#define X\n")
    os.symlink("a.o", landed / "pkg" / "link")
    store = Store(tmp_path / "store")
    task = Task(name="t", module_type="script", container=ContainerSpec(image="i"), script="")
    output = OutputRecorder(Quiet(), store, task)
    output.output(task, "stdout", b"built\n")
    ran = TaskResult(exit_code=0, output_dir=landed)
    result, blobs = declared_result(store, ran, output, (
        ("a.o", "pkg/a.o"), ("link", "pkg/link"), ("gen", "pkg/gen"), ("missing", "pkg/m")))
    assert [(f.path, f.is_executable) for f in result.output_files] == [("a.o", True)]
    assert store.get_blob(result.output_files[0].digest.hash) == b"object"
    assert [(s.path, s.target) for s in result.output_symlinks] == [("link", "a.o")]
    (directory,) = result.output_directories
    assert directory.path == "gen"
    data = store.get_blob(directory.tree_digest.hash)
    assert data is not None
    tree = re_pb2.Tree.FromString(data)
    assert [d.name for d in tree.root.directories] == ["sub"]
    assert [f.name for f in tree.children[0].files] == ["x.h"]
    assert store.get_blob(result.stdout_digest.hash) == b"built\n"
    hashes = {b.hash for b in blobs}
    assert directory.tree_digest.hash in hashes and tree.children[0].files[0].digest.hash in hashes
    assert all(store.has_blob(h) for h in hashes), "every blob to upload is in the store"
