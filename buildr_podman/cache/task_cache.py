"""The task cache as a run uses it: key a task, serve a hit, record a success, explain a miss.

A hit lands the stored change set through the very extraction a run's archive goes through
(the same files, modes, mtimes and ownership into `<out_dir>/<task>/`), then the runner's
write_back applies it as it would a run's: nothing downstream can tell, except that the
outcome says `cached` and the output was replayed (stdout, then stderr) after a note saying so.

What is stored for a successful run, in REAPI's ActionResult shape: the exit code, stdout and
stderr as blobs, and three output files: `buildr/changes.tar` (the out dir as it landed,
tarred with the agent's writer), `buildr/deleted-paths` (NUL-separated) and
`buildr/outcome.json` (the counts the summary shows). Failed runs are not stored.

With a remote cache (remote.py), a local miss asks the server; what it has is copied into the
local store and served from there like a local hit. With `upload = true` a stored success is
sent to the server too. Whatever goes wrong with the server is one warning for the run, and
the task runs (or hits) locally: the remote can cost time, never an outcome.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.agent.tarwriter import TarWriter
from buildr_podman.archive.extract import ExtractStats
from buildr_podman.cache.explain import explain_miss
from buildr_podman.cache.image_ids import podman_image_id
from buildr_podman.cache.key import ActionKey, NotCacheable, action_key
from buildr_podman.cache.store import (
    CHANGES,
    DELETED,
    OUTCOME,
    CorruptEntry,
    Entry,
    Store,
    output_file,
)
from buildr_podman.cache.store import (
    DEFAULT_MAX_BYTES as DEFAULT_STORE_BYTES,
)
from buildr_podman.cache.tree import Digest, StatCache, Tree, TreeBuilder, proto_digest
from buildr_podman.cache_root import cache_root
from buildr_podman.executor import RunObserver
from buildr_podman.landing import OutputLanding
from buildr_podman.model import Project, Task, TaskOutcome, TaskResult
from buildr_podman.phases import PhaseUpdate
from buildr_podman.secrets import Redactor, secret_values

if TYPE_CHECKING:
    from buildr_podman.cache.remote import RemoteCache

__all__ = ["Lookup", "OutputRecorder", "TaskCache", "default_store", "podman_image_id",
           "store_result"]

REPLAY_CHUNK = 64 << 10

#: how the cache learns an image's content id (podman image inspect); raises on failure
ImageIdLookup = Callable[[str], str]


def default_store(project: Project | None = None) -> Store:
    bound = project.cache_max_bytes if project is not None else None
    return Store(cache_root() / "task-cache", bound or DEFAULT_STORE_BYTES)


@dataclass
class Lookup:
    """What the cache said about a task before it ran."""

    key: ActionKey | None = None  #: None: not cacheable (see note)
    entry: Entry | None = None  #: a verified hit
    note: str = ""  #: why not cacheable, or on a miss what changed since the last entry
    remote: bool = False  #: the hit came from the remote cache
    #: where the entry came from, if not the local store or the remote cache: a remote
    #: execution server (remote_execution/), whose result lands here exactly as a hit does
    where: str = ""
    ran_remotely: bool = False  #: the entry is the result of this run's remote execution


class TaskCache:
    """One run's use of the store; thread-safe (tasks run on worker threads)."""

    def __init__(self, project: Project, store: Store | None = None,
                 image_id: ImageIdLookup = podman_image_id, read: bool = True) -> None:
        self.project = project
        self.read = read  #: False (run --no-cache): every task runs; successes are stored
        self.store = store or default_store(project)
        self._project_id = hashlib.sha256(str(project.root.resolve()).encode()).hexdigest()[:16]
        self.stat_cache = StatCache(self.store.root / "stat" / self._project_id)
        self._image_id = image_id
        self._image_ids: dict[str, str] = {}
        self._lock = threading.Lock()  # the stat cache and image ids are shared
        #: lookups of this run; remote_hits are among the hits
        self.counts = {"hits": 0, "misses": 0, "uncacheable": 0, "remote_hits": 0}
        self.store.sweep_temporary()
        self.remote: RemoteCache | None = None
        if project.cache_remote is not None:
            from buildr_podman.cache.remote import RemoteCache  # gRPC only where configured

            self.remote = RemoteCache(project.cache_remote)
        self._remote_warned = False

    def close(self) -> None:
        with self._lock:
            self.stat_cache.save()
            if any(self.counts.values()):
                self.store.log_run(self.counts)
        if self.remote is not None:
            self.remote.close()
        stop_asking = getattr(self._image_id, "close", None)  # image_ids.ImageIds
        if stop_asking is not None:
            stop_asking()

    # -- before a task runs ------------------------------------------------------------------

    def lookup(self, task: Task, dependency_outputs: Mapping[str, Path],
               warn: Callable[[str], None]) -> Lookup:
        try:
            key = self._key(task, dependency_outputs)
        except NotCacheable as exc:
            self._count("uncacheable")
            return Lookup(note=f"not cached: {exc}")
        if not self.read:
            self._count("misses")
            return Lookup(key, None, "cache miss: not read (--no-cache)")
        try:
            entry = self.store.get(key.hash)
        except CorruptEntry as exc:
            self._count("misses")
            warn(f"the cache entry was damaged, so the task runs ({exc})")
            return Lookup(key, None, "cache miss: the entry was damaged")
        if entry is not None:
            self._count("hits")
            return Lookup(key, entry)
        if self.remote is not None:
            entry = self._fetch(task, key, warn)
            if entry is not None:
                self._count("hits")
                self._count("remote_hits")
                url = self.remote.settings.url
                return Lookup(key, entry, f"cache hit: from the remote cache {url}", remote=True)
        self._count("misses")
        with self._lock:
            changes = explain_miss(self.store, self._ref(task), key, TreeBuilder(self.stat_cache))
        return Lookup(key, None, "cache miss: " + changes)

    def _fetch(self, task: Task, key: ActionKey, warn: Callable[[str], None]) -> Entry | None:
        """The remote's entry of the key, copied into the local store and read back from it
        as a local hit is; None (maybe after a warning) when the task must run."""
        from buildr_podman.cache.remote import RemoteCorrupt, RemoteUnavailable

        assert self.remote is not None
        try:
            if not self.remote.fetch(key.digest, self.store):
                return None
            entry = self.store.get(key.hash)
        except RemoteUnavailable as exc:
            self._remote_off(warn, f"the remote cache {self.remote.settings.url} is not used "
                             f"in this run, tasks run locally: {exc}")
            return None
        except (RemoteCorrupt, CorruptEntry) as exc:
            warn(f"the remote cache's entry was damaged, so the task runs ({exc})")
            return None
        except OSError as exc:
            warn(f"the remote cache's entry could not be stored here, so the task runs ({exc})")
            return None
        if entry is not None:
            self.remember(task, key)  # what a later miss of the task is explained against
        return entry

    def _remote_off(self, warn: Callable[[str], None], message: str) -> None:
        """One warning per run, whichever task met the failure first."""
        with self._lock:
            if self._remote_warned:
                return
            self._remote_warned = True
        warn(message)

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _key(self, task: Task, dependency_outputs: Mapping[str, Path]) -> ActionKey:
        image = task.container.image
        with self._lock:
            if image not in self._image_ids:
                try:
                    self._image_ids[image] = self._image_id(image)
                except Exception as exc:  # noqa: BLE001 - the run itself reports a bad image
                    raise NotCacheable(f"the id of image {image!r} is unknown ({exc})") from exc
            return action_key(self.project, task, self._image_ids[image],
                              TreeBuilder(self.stat_cache), dependency_outputs)

    def _ref(self, task: Task) -> str | None:
        return self.store.ref(self._project_id, task.name)

    # -- a hit -------------------------------------------------------------------------------

    def replay(self, task: Task, lookup: Lookup, observer: RunObserver) -> TaskOutcome:
        """Lands a hit's change set where a successful run's outputs land and replays its
        output; the entry is closed."""
        entry, key = lookup.entry, lookup.key
        assert entry is not None and key is not None
        where = lookup.where or (f"the remote cache {self.remote.settings.url}"
                                 if lookup.remote and self.remote is not None else "the cache")
        succeeded = entry.result.exit_code == 0  # a remote execution's result may be a failure
        try:
            observer.log(task, (f"ran on {where} (key {key.hash[:12]}): its changes and its "
                                "output below come from the worker that ran it")
                         if lookup.ran_remotely else
                         (f"cached (key {key.hash[:12]}): its changes come from {where} and "
                          "its output below is replayed from the run that stored it"))
            for stream in ("stdout", "stderr"):
                _replay_stream(task, stream, entry.blob(stream), observer)
            changes = entry.blob(CHANGES)
            stats = ExtractStats()
            output_dir: Path | None = None
            if changes is not None:  # the very landing a successful run's archive goes through
                landing = OutputLanding(self.project)
                staged = landing.stage(task, changes, observer)
                stats = staged.stats
                output_dir = landing.land(task, staged, succeeded, observer=observer)
            counts = json.loads(entry.read(OUTCOME) or b"{}")
            deleted = tuple(p for p in entry.read(DELETED).decode("utf-8", "surrogateescape")
                            .split("\0") if p)
        finally:
            entry.close()
        return TaskOutcome(task=task.name, exit_code=entry.result.exit_code,
                           files_returned=stats.files + stats.symlinks,
                           bytes_returned=stats.bytes, deleted_paths=deleted,
                           tracking=str(counts.get("tracking", "")),
                           output_dir=output_dir, cached=not lookup.ran_remotely)

    # -- after a miss ------------------------------------------------------------------------

    def record(self, task: Task, key: ActionKey, outcome: TaskResult | TaskOutcome,
               output: OutputRecorder, warn: Callable[[str], None] = lambda _: None) -> None:
        """Stores a successful run's result under its key (before write_back moves its files
        out of the out dir), and on the remote cache with `upload = true`. Blobs first, the
        ActionResult last: never a half entry."""
        result = store_result(self.store, outcome, output)
        self.store.put_result(key.hash, result)
        self.remember(task, key)
        # What a task with secrets wrote may hold them: its entry stays on this machine.
        if self.remote is not None and self.remote.settings.upload \
                and not task.secret_environment:
            self._upload(key, result, warn)

    def remember(self, task: Task, key: ActionKey) -> None:
        """What a later miss of the task is explained against: the Action, its Command and its
        input tree, and the task's last key."""
        self.store_messages(key)
        self.store.set_ref(self._project_id, task.name, key.hash)

    def store_messages(self, key: ActionKey) -> dict[Digest, Path]:
        """Puts the key's Action, Command and Directory messages in the store; returns where
        each is (what a remote execution sends the server)."""
        store = self.store
        with self._lock:
            directories = key.directories(TreeBuilder(self.stat_cache))
        return {digest: store.blob_path(digest[0])
                for digest in map(store.put_blob, (key.action, key.command,
                                                   *directories.values()))}

    def walk(self, directory: Path, skip: tuple[str, ...] = ()) -> Tree:
        """The tree of a host directory as the key saw it (through the run's stat cache)."""
        with self._lock:
            return TreeBuilder(self.stat_cache).walk(str(directory), skip)

    def _upload(self, key: ActionKey, result: re_pb2.ActionResult,
                warn: Callable[[str], None]) -> None:
        from buildr_podman.cache.remote import RemoteUnavailable

        assert self.remote is not None
        try:
            self.remote.upload(key.digest, result, self.store)
        except RemoteUnavailable as exc:
            self._remote_off(warn, f"not stored on the remote cache {self.remote.settings.url}, "
                             f"which is not used for the rest of this run: {exc}")
        except OSError as exc:  # a blob evicted meanwhile by another run
            warn(f"not stored on the remote cache: {exc}")


def store_result(store: Store, outcome: TaskResult | TaskOutcome,
                 output: OutputRecorder) -> re_pb2.ActionResult:
    """A finished run as the cache's ActionResult (module docstring), its blobs put in `store`
    first: the changes as they landed in outcome.output_dir, the deleted paths, the counts,
    stdout and stderr. The caller names it (a key's entry; remote execution's result)."""
    files = []
    if outcome.output_dir is not None and outcome.output_dir.is_dir():
        files.append(output_file(CHANGES, store.put_blob_file(
            _tar_directory(outcome.output_dir, store.temporary_file()))))
    deleted = "\0".join(outcome.deleted_paths).encode("utf-8", "surrogateescape")
    files.append(output_file(DELETED, store.put_blob(deleted)))
    counts = {"files_returned": outcome.files_returned,
              "bytes_returned": outcome.bytes_returned, "tracking": outcome.tracking}
    files.append(output_file(OUTCOME, store.put_blob(json.dumps(counts).encode())))
    result = re_pb2.ActionResult(exit_code=outcome.exit_code, output_files=files)
    for stream, field in (("stdout", result.stdout_digest), ("stderr", result.stderr_digest)):
        path = output.path(stream)
        if path is not None:
            field.CopyFrom(proto_digest(store.put_blob_file(path)))
    return result


class OutputRecorder:
    """An observer in front of the run's: keeps the task's output in temporary files of the
    store (a chatty build's output is not held in memory) for record() to store."""

    def __init__(self, observer: RunObserver, store: Store, task: Task) -> None:
        self._observer = observer
        self._store = store
        self._files: dict[str, tuple[Path, BinaryIO]] = {}
        # A task cached with its secrets (cache_secrets) stores its output masked, as shown.
        self._secrets = secret_values(task)
        self._redactors: dict[str, Redactor] = {}

    def output(self, task: Task, stream: str, data: bytes) -> None:
        if stream not in self._files:
            path = self._store.temporary_file()
            self._files[stream] = (path, open(path, "wb"))  # closed by path() or discard()
            if self._secrets:
                self._redactors[stream] = Redactor(self._secrets)
        redactor = self._redactors.get(stream)
        self._files[stream][1].write(redactor.feed(data) if redactor else data)
        self._observer.output(task, stream, data)

    def log(self, task: Task, message: str) -> None:
        self._observer.log(task, message)

    def phase(self, task: Task, update: PhaseUpdate) -> None:
        forward = getattr(self._observer, "phase", None)
        if forward is not None:
            forward(task, update)

    def path(self, stream: str) -> Path | None:
        """The finished file of one stream's output, or None if there was none."""
        if stream not in self._files:
            return None
        path, file = self._files[stream]
        redactor = self._redactors.pop(stream, None)
        if redactor is not None and not file.closed:
            file.write(redactor.flush())
        file.close()
        return path

    def discard(self) -> None:
        for path, file in self._files.values():
            file.close()
            path.unlink(missing_ok=True)
        self._files.clear()


def _replay_stream(task: Task, stream: str, blob: BinaryIO | None,
                   observer: RunObserver) -> None:
    if blob is None:
        return
    while chunk := blob.read(REPLAY_CHUNK):
        observer.output(task, stream, chunk)


def _tar_directory(directory: Path, target: Path) -> Path:
    """The directory's content as a tar file at target, in a stable order: what landed in
    the out dir is what the archive brought, so extracting this lands the same again."""
    with open(target, "wb") as sink:
        writer = TarWriter(sink)
        for root, subdirectories, names in os.walk(directory):
            subdirectories.sort()
            rel = os.path.relpath(root, directory)
            prefix = "" if rel == "." else rel + "/"
            for name in (*subdirectories, *sorted(names)):
                path = os.path.join(root, name)
                writer.add(path, prefix + name, os.lstat(path))
        writer.close()
    return target

