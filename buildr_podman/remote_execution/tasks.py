"""A task that missed the cache, run on the remote execution server and landed here exactly as
a local run would land.

The Action sent is the cache key's own (cache/key.py: the same digest), so what a worker
returns is the task cache's ActionResult (cache/task_cache.py): the change set as
`buildr/changes.tar`, the deletions, the counts, stdout and stderr. Landing it is landing a hit:
the blobs are fetched into the local store, a success is stored under its key there (the next
run hits locally), and TaskCache.replay lands the changes in the out dir and replays the output;
the runner's write_back follows as after any run. A failure lands in the failed dir, its output
shown, and its dependants do not run.

Before Execute, the server is sent what it lacks of the Action, its Command, the input tree's
Directory messages and the input files (FindMissingBlobs, then batches or ByteStream). A task
that cannot run elsewhere runs here, said once (local_reason).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path

import grpc

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.cache.key import ActionKey
from buildr_podman.cache.remote import (
    GRPC_LIMIT,
    RemoteCache,
    RemoteCorrupt,
    RemoteUnavailable,
    blob_digests,
)
from buildr_podman.cache.remote_config import RemoteCacheSettings
from buildr_podman.cache.store import CorruptEntry
from buildr_podman.cache.task_cache import Lookup, TaskCache
from buildr_podman.cache.tree import Digest, Tree
from buildr_podman.executor import RunObserver
from buildr_podman.model import Project, Task, TaskOutcome
from buildr_podman.phases import Phases
from buildr_podman.podman.input_mapping import mapped_directories
from buildr_podman.remote_execution.execution import (
    Cancelled,
    ExecutionClient,
    ExecutionFailed,
    MissingInputs,
)
from buildr_podman.remote_execution.settings import RemoteExecutionSettings

__all__ = ["RemoteExecution", "local_reason"]

TIMED_OUT = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
#: an ExecutionStage word (execution.STAGES) -> the name of its phase (phases.py)
STAGE_PHASES = {"checking the cache": "remote_cache_check", "queued": "remote_queued",
                "executing": "remote_executing"}


def local_reason(task: Task, lookup: Lookup) -> str | None:
    """Why the task must run on this machine, or None if a worker can run it."""
    if lookup.key is None:  # what cannot be keyed has no Action to send
        return lookup.note.removeprefix("not cached: ")
    if task.secret_environment:
        return "its secret_environment values never leave this machine"
    if task.container.bind_mounts:
        return (f"its bind_mount of {task.container.bind_mounts[0].source} is a path on this "
                "machine")
    return None


class RemoteExecution:
    """One run's use of the remote execution server; thread-safe (tasks run on worker
    threads)."""

    def __init__(self, settings: RemoteExecutionSettings, cache: TaskCache,
                 skip_cache_lookup: bool = False) -> None:
        self.settings = settings
        self.cache = cache
        self.skip_cache_lookup = skip_cache_lookup  #: run --no-cache: the server's cache too
        # Its CAS, through the remote cache's client: the same batching, limits and checks.
        self.blobs = RemoteCache(RemoteCacheSettings(settings.url, settings.target,
                                                     instance_name=settings.instance_name))
        self._channel = grpc.insecure_channel(settings.target, options=[
            ("grpc.max_receive_message_length", 2 * GRPC_LIMIT),
            ("grpc.enable_retries", 0)])
        self.client = ExecutionClient(settings, self._channel)

    @classmethod
    def for_run(cls, project: Project, cache: TaskCache | None,
                use_cache: bool) -> RemoteExecution | None:
        """The run's remote execution, if the project has one (it needs the task cache: the
        key is the Action)."""
        if project.remote_execution is None or cache is None:
            return None
        return cls(project.remote_execution, cache, skip_cache_lookup=not use_cache)

    def close(self) -> None:
        self._channel.close()
        self.blobs.close()

    def run(self, task: Task, lookup: Lookup, landed: Mapping[str, Path],
            observer: RunObserver, warn: Callable[[str], None],
            cancelled: threading.Event) -> TaskOutcome | None:
        """Runs the task remotely and lands its result; None (after one line saying why) when
        it must run here. `landed` are this run's outputs of the modules (what the key
        covered). Raises ExecutionFailed, and the runner's TaskCancelled."""
        reason = local_reason(task, lookup)
        if reason is not None:
            warn(f"runs here, not on {self.settings.url}: {reason}")
            return None
        key = lookup.key
        assert key is not None
        response = self._execute(task, key, landed, observer, cancelled)
        return self._land(task, key, response, observer)

    # -- sending -----------------------------------------------------------------------------

    def _execute(self, task: Task, key: ActionKey, landed: Mapping[str, Path],
                 observer: RunObserver, cancelled: threading.Event) -> re_pb2.ExecuteResponse:
        for attempt in (1, 2):
            self._upload(task, key, landed, observer)
            with _Stages(observer, task, self.settings.url) as stages:
                try:
                    return self.client.execute(key.digest,
                                               skip_cache_lookup=self.skip_cache_lookup,
                                               stage=stages.enter, cancelled=cancelled)
                except MissingInputs as exc:
                    if attempt == 2:  # not a lost input, then: the worker's own reason
                        raise self._failed(f"it answered FAILED_PRECONDITION: {exc}") from exc
                    observer.log(task, f"the server is missing something ({exc}): sending the "
                                 "inputs again")
                except Cancelled as exc:
                    from buildr_podman.runner import TaskCancelled

                    raise TaskCancelled from exc
        raise AssertionError("unreachable")

    def _upload(self, task: Task, key: ActionKey, landed: Mapping[str, Path],
                observer: RunObserver) -> None:
        with Phases(observer, task).blocking("remote_upload",
                                             f"sending inputs to {self.settings.url}"):
            try:
                blobs = self.cache.store_messages(key)
                for digest, path in self._input_files(task, landed):
                    blobs.setdefault(digest, path)
                self.blobs.upload_files(blobs)
            except RemoteUnavailable as exc:
                raise self._failed(str(exc)) from exc
            except OSError as exc:
                raise ExecutionFailed(f"task {task.name!r}: an input could not be sent to "
                                      f"{self.settings.url} ({exc})") from exc

    def _input_files(self, task: Task, landed: Mapping[str, Path],
                     ) -> Iterator[tuple[Digest, Path]]:
        """Every input file by digest, from the directories the key was built of (walked
        again through the run's stat cache: nothing is hashed twice)."""
        project = self.cache.project
        out_dir = str(project.out_dir.resolve())
        sources: list[tuple[Path, tuple[str, ...]]] = [
            (source, (out_dir,)) for source, _ in mapped_directories(project, task)]
        sources += [(landed[name], ()) for name in task.outputs_used
                    if name in landed and landed[name].is_dir()]
        for source, skip in sources:
            yield from _files(self.cache.walk(source, skip), source)

    # -- landing -----------------------------------------------------------------------------

    def _land(self, task: Task, key: ActionKey, response: re_pb2.ExecuteResponse,
              observer: RunObserver) -> TaskOutcome:
        result = response.result
        timed_out = response.status.code == TIMED_OUT
        store = self.cache.store
        try:
            self.blobs.fetch_blobs(blob_digests(result), store)
            if result.exit_code == 0 and not timed_out:  # as a local run, failures are not kept
                store.put_result(key.hash, result)
                self.cache.remember(task, key)
            entry = store.open(result)
        except RemoteUnavailable as exc:
            raise self._failed(f"its result could not be fetched: {exc}") from exc
        except (RemoteCorrupt, CorruptEntry, OSError) as exc:
            raise self._failed(f"its result could not be landed here ({exc})") from exc
        server = f"the remote execution server {self.settings.url}"
        outcome = self.cache.replay(task, Lookup(
            key, entry, remote=True, ran_remotely=not response.cached_result,
            where=f"the cache of {server}" if response.cached_result else server), observer)
        return dataclasses.replace(outcome, timed_out=True) if timed_out else outcome

    def _failed(self, why: str) -> ExecutionFailed:
        return ExecutionFailed(f"remote execution on {self.settings.url} failed: {why}")


class _Stages:
    """The stages of a remote task (queued, executing) as its phases: each said once it
    has lasted the phases' threshold, and in the task's log."""

    def __init__(self, observer: RunObserver, task: Task, url: str) -> None:
        self._observer = observer
        self._task = task
        self._url = url
        self._current = ""
        self._phase = ExitStack()

    def enter(self, word: str) -> None:
        if word == self._current:
            return
        self._current = word
        self._phase.close()  # the previous stage's phase ends
        self._phase.enter_context(Phases(self._observer, self._task).blocking(
            STAGE_PHASES[word], f"{word} on {self._url}"))
        self._observer.log(self._task, f"remote execution: {word} on {self._url}")

    def __enter__(self) -> _Stages:
        return self

    def __exit__(self, *_: object) -> None:
        self._phase.close()


def _files(tree: Tree, directory: Path) -> Iterator[tuple[Digest, Path]]:
    """Every file of a walked tree, with the host path it was walked from."""
    stack = [(tree, directory)]
    while stack:
        node, path = stack.pop()
        for name, (digest, _mode) in node.files.items():
            yield digest, path / name
        stack.extend((sub, path / name) for name, sub in node.directories.items())
