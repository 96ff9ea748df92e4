"""The ActionResult of another client's Action (Bazel, ...): the outputs it declares, as REAPI
says, instead of buildr-podman's change set.

The Command names its outputs (`output_paths`, or the older `output_files` and
`output_directories`), relative to its working directory. What the task changed landed under
the run's output directory (the agent returns only changes), so a declared path is found there:
a file becomes an OutputFile, a symlink an OutputSymlink, a directory an OutputDirectory (a
REAPI `Tree` blob, its Directory messages from cache/tree.py, its files as blobs). A declared
output the task did not write (or left as it was in the inputs) is not listed, as REAPI says
for a missing output.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.cache.store import Store
from buildr_podman.cache.task_cache import OutputRecorder
from buildr_podman.cache.tree import StatCache, TreeBuilder, proto_digest
from buildr_podman.model import TaskResult

__all__ = ["declared_result"]


def declared_result(store: Store, ran: TaskResult, output: OutputRecorder,
                    outputs: tuple[tuple[str, str], ...]
                    ) -> tuple[re_pb2.ActionResult, list[re_pb2.Digest]]:
    """The ActionResult of the declared `outputs` ((path as declared, relative to the working
    directory; the same relative to the workspace root)) and every blob it needs in the CAS
    (all put in `store`)."""
    result = re_pb2.ActionResult(exit_code=ran.exit_code)
    blobs: list[re_pb2.Digest] = []
    base = ran.output_dir
    for declared, below_root in outputs:
        path = base / below_root if base is not None else None
        if path is None or not os.path.lexists(path):
            continue
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            result.output_symlinks.add(path=declared, target=os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            digest = _put_file(store, path)
            blobs.append(digest)
            result.output_files.add(path=declared, digest=digest,
                                    is_executable=bool(st.st_mode & 0o111))
        elif stat.S_ISDIR(st.st_mode):
            tree, root, digests = _put_tree(store, path)
            blobs += [tree, *digests]
            result.output_directories.add(path=declared, tree_digest=tree,
                                          root_directory_digest=root)
    for stream, field in (("stdout", result.stdout_digest), ("stderr", result.stderr_digest)):
        recorded = output.path(stream)
        if recorded is not None:
            field.CopyFrom(proto_digest(store.put_blob_file(recorded)))
            blobs.append(field)
    return result, blobs


def _put_file(store: Store, path: Path) -> re_pb2.Digest:
    copy = store.temporary_file()
    shutil.copyfile(path, copy, follow_symlinks=False)
    return proto_digest(store.put_blob_file(copy))


def _put_tree(store: Store, directory: Path
              ) -> tuple[re_pb2.Digest, re_pb2.Digest, list[re_pb2.Digest]]:
    """The REAPI Tree of a directory in `store`: its digest, its root Directory's digest, and
    the digests of its files."""
    builder = TreeBuilder(StatCache())
    messages: dict[str, bytes] = {}
    root = builder.digest(builder.walk(str(directory)), messages)
    files = []
    for where, _, names in os.walk(directory):
        for name in names:
            path = Path(where) / name
            if stat.S_ISREG(os.lstat(path).st_mode):
                files.append(_put_file(store, path))
    tree = re_pb2.Tree(root=re_pb2.Directory.FromString(messages.pop(root[0])),
                       children=[re_pb2.Directory.FromString(m) for m in messages.values()])
    tree_digest = proto_digest(store.put_blob(tree.SerializeToString(deterministic=True)))
    return tree_digest, proto_digest(root), files
