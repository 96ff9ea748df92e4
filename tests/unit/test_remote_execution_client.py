"""The remote execution client's logic against a small in-process REAPI server (CAS,
Capabilities, Execution, Operations) whose "worker" answers each Action with a change set:
what is sent (the Action, its Command, the input tree, the input files, only what is missing),
the stages, a stream that breaks, a cancelled run, a server that is down or refuses, and the
result landing exactly as a cache hit lands. The real cluster (BuildGrid and buildr-podman
workers) is in tests/integration/test_remote_execution.py."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2_grpc as re_grpc,
)
from buildr_podman._protos.google.longrunning import operations_pb2, operations_pb2_grpc
from buildr_podman.agent.tarwriter import TarWriter
from buildr_podman.cache import tree
from buildr_podman.cache.store import CHANGES, DELETED, OUTCOME, Store
from buildr_podman.cache.task_cache import TaskCache
from buildr_podman.model import BindMount, ContainerSpec, Project, Task
from buildr_podman.remote_execution.execution import (
    Cancelled,
    ExecutionClient,
    ExecutionFailed,
    MissingInputs,
)
from buildr_podman.remote_execution.settings import RemoteExecutionSettings, execution_settings
from buildr_podman.remote_execution.tasks import RemoteExecution, local_reason

Stage = re_pb2.ExecutionStage


@pytest.fixture(autouse=True)
def _no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree, "RACY_SECONDS", -1.0)


def digest(data: bytes) -> re_pb2.Digest:
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def operation(name: str, stage: int = 0, response: re_pb2.ExecuteResponse | None = None,
              ) -> operations_pb2.Operation:
    found = operations_pb2.Operation(name=name, done=response is not None)
    found.metadata.Pack(re_pb2.ExecuteOperationMetadata(stage=stage))
    if response is not None:
        found.response.Pack(response)
    return found


@dataclass
class FakeGrid:
    """A REAPI server whose worker answers an Action by `work` (the Action, its Command and
    the server's blobs in, an ExecuteResponse out)."""

    work: Callable[[FakeGrid, re_pb2.Action], re_pb2.ExecuteResponse]
    blobs: dict[str, bytes] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)  #: hashes, in order
    breaks: int = 0  #: Execute streams to break (UNAVAILABLE) after their first Operation
    hold: threading.Event | None = None  #: set: the worker may answer
    cancelled: list[str] = field(default_factory=list)

    def GetCapabilities(self, request: Any, context: Any) -> Any:
        self.calls.append("GetCapabilities")
        return re_pb2.ServerCapabilities(
            cache_capabilities=re_pb2.CacheCapabilities(
                digest_functions=[re_pb2.DigestFunction.SHA256]),
            execution_capabilities=re_pb2.ExecutionCapabilities(exec_enabled=True))

    def FindMissingBlobs(self, request: Any, context: Any) -> Any:
        self.calls.append("FindMissingBlobs")
        return re_pb2.FindMissingBlobsResponse(missing_blob_digests=[
            d for d in request.blob_digests if d.hash not in self.blobs])

    def BatchUpdateBlobs(self, request: Any, context: Any) -> Any:
        self.calls.append("BatchUpdateBlobs")
        for item in request.requests:
            assert digest(item.data) == item.digest, "a blob does not match its digest"
            self.blobs[item.digest.hash] = item.data
            self.uploaded.append(item.digest.hash)
        return re_pb2.BatchUpdateBlobsResponse(responses=[
            re_pb2.BatchUpdateBlobsResponse.Response(digest=r.digest) for r in request.requests])

    def BatchReadBlobs(self, request: Any, context: Any) -> Any:
        self.calls.append("BatchReadBlobs")
        return re_pb2.BatchReadBlobsResponse(responses=[
            re_pb2.BatchReadBlobsResponse.Response(digest=d, data=self.blobs[d.hash])
            for d in request.digests])

    def Execute(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self.calls.append("Execute")
        name = f"operations/{len(self.calls)}"
        self._actions[name] = request.action_digest
        yield operation(name, Stage.QUEUED)
        if self.breaks:
            self.breaks -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "the proxy went away")
        yield from self._finish(name, request.action_digest, context)

    def WaitExecution(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self.calls.append("WaitExecution")
        action = self._actions[request.name]
        yield from self._finish(request.name, action, context)

    def CancelOperation(self, request: Any, context: Any) -> Any:
        self.cancelled.append(request.name)
        from google.protobuf import empty_pb2

        return empty_pb2.Empty()

    _actions: dict[str, re_pb2.Digest] = field(default_factory=dict)

    def _finish(self, name: str, action_digest: re_pb2.Digest,
                context: grpc.ServicerContext) -> Iterator[Any]:
        yield operation(name, Stage.EXECUTING)
        if self.hold is not None:
            while not self.hold.wait(0.05):
                if not context.is_active():
                    return
        action = re_pb2.Action.FromString(self.blobs[action_digest.hash])
        yield operation(name, Stage.COMPLETED, self.work(self, action))

    def put(self, data: bytes) -> re_pb2.Digest:
        self.blobs[hashlib.sha256(data).hexdigest()] = data
        return digest(data)


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[Callable[..., RemoteExecutionSettings]]:
    servers: list[grpc.Server] = []

    def start(fake: FakeGrid) -> RemoteExecutionSettings:
        server = grpc.server(ThreadPoolExecutor(max_workers=8))
        for add, base in ((re_grpc.add_CapabilitiesServicer_to_server,
                           re_grpc.CapabilitiesServicer),
                          (re_grpc.add_ContentAddressableStorageServicer_to_server,
                           re_grpc.ContentAddressableStorageServicer),
                          (re_grpc.add_ExecutionServicer_to_server, re_grpc.ExecutionServicer),
                          (operations_pb2_grpc.add_OperationsServicer_to_server,
                           operations_pb2_grpc.OperationsServicer)):
            servicer = type("Servicer", (base,), {
                name: getattr(fake, name) for name in dir(fake) if name[0].isupper()})()
            add(servicer, server)
        socket = f"unix:{tmp_path}/grid-{len(servers)}.sock"
        server.add_insecure_port(socket)
        server.start()
        servers.append(server)
        return execution_settings(socket, tmp_path)

    yield start
    for server in servers:
        server.stop(None)


def changes_tar(files: dict[str, bytes]) -> bytes:
    """A change set as the worker sends it: the out dir's content, tarred by the agent's
    writer."""
    directory = Path(__import__("tempfile").mkdtemp())
    sink = io.BytesIO()
    writer = TarWriter(sink)
    for name, data in files.items():
        (directory / name).write_bytes(data)
        writer.add(str(directory / name), name, (directory / name).lstat())
    writer.close()
    return sink.getvalue()


def worker(files: dict[str, bytes], exit_code: int = 0, stdout: bytes = b"built\n",
           deleted: tuple[str, ...] = ()) -> Callable[[FakeGrid, re_pb2.Action],
                                                      re_pb2.ExecuteResponse]:
    """A worker that checks it was sent everything, then returns this change set."""

    def work(fake: FakeGrid, action: re_pb2.Action) -> re_pb2.ExecuteResponse:
        command = re_pb2.Command.FromString(fake.blobs[action.command_digest.hash])
        assert command.arguments[-1].startswith("echo")
        _check_tree(fake, action.input_root_digest)
        result = re_pb2.ActionResult(exit_code=exit_code, stdout_digest=fake.put(stdout))
        for path, blob in ((CHANGES, changes_tar(files)),
                           (DELETED, "\0".join(deleted).encode()),
                           (OUTCOME, json.dumps({"files_returned": len(files),
                                                 "tracking": "inotify"}).encode())):
            result.output_files.add(path=path, digest=fake.put(blob))
        return re_pb2.ExecuteResponse(result=result)

    return work


def _check_tree(fake: FakeGrid, root: re_pb2.Digest) -> None:
    directory = re_pb2.Directory.FromString(fake.blobs[root.hash])
    for file in directory.files:
        assert file.digest.hash in fake.blobs, f"input {file.name} was not sent"
    for sub in directory.directories:
        _check_tree(fake, sub.digest)


def make_project(root: Path) -> Project:
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (root / ".buildr").mkdir()
    (root / ".buildr" / "tasks.hcl").write_text("# the configuration\n")
    return Project(root=root, out_dir=root / ".buildr" / "out")


def make_task(**changes: Any) -> Task:
    task = Task(name="build", module_type="script", container=ContainerSpec(image="img:1"),
                script="echo built")
    import dataclasses

    return dataclasses.replace(task, **changes)


class Observer:
    """What a run's observer hears."""

    def __init__(self) -> None:
        self.outputs: list[tuple[str, bytes]] = []
        self.logs: list[str] = []
        self.phases: list[str] = []
        self.warnings: list[str] = []

    def output(self, task: Task, stream: str, data: bytes) -> None:
        self.outputs.append((stream, data))

    def log(self, task: Task, message: str) -> None:
        self.logs.append(message)

    def phase(self, task: Task, update: Any) -> None:
        self.phases.append(f"{update.state} {update.name}")


@pytest.fixture
def setup(tmp_path: Path, grid: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("BUILDR_PHASE_THRESHOLD", "0")  # every phase is said

    def make(fake: FakeGrid, use_cache: bool = True) -> tuple[Project, TaskCache,
                                                            RemoteExecution]:
        project = make_project(tmp_path / "repo")
        cache = TaskCache(project, Store(tmp_path / "store"),
                          image_id=lambda image: "sha256:" + "a" * 64)
        remote = RemoteExecution(grid(fake), cache, skip_cache_lookup=not use_cache)
        return project, cache, remote

    return make


def run_remotely(cache: TaskCache, remote: RemoteExecution, task: Task,
                 observer: Observer | None = None) -> Any:
    observer = observer or Observer()
    lookup = cache.lookup(task, {}, observer.warnings.append)
    return remote.run(task, lookup, {}, observer, observer.warnings.append, threading.Event())


# -- which tasks run here ----------------------------------------------------------------------


def test_a_task_that_cannot_leave_this_machine_runs_here_said_once(setup: Any) -> None:
    fake = FakeGrid(worker({}))
    project, cache, remote = setup(fake)
    for task, why in ((make_task(cache=False), "it says cache = false"),
                      (make_task(secret_environment=(("TOKEN", "s3cret"),), cache_secrets=True),
                       "its secret_environment values never leave this machine"),
                      (make_task(container=ContainerSpec(image="img:1", bind_mounts=(
                          BindMount(source=project.root / "src", target="/src",
                                    read_only=True),))),
                       f"its bind_mount of {project.root / 'src'} is a path on this machine")):
        observer = Observer()
        assert run_remotely(cache, remote, task, observer) is None
        assert observer.warnings == [f"runs here, not on {remote.settings.url}: {why}"]
        assert local_reason(task, cache.lookup(task, {}, print)) == why
    assert "Execute" not in fake.calls
    remote.close()


# -- a task run remotely -------------------------------------------------------------------------


def test_a_remote_run_sends_what_is_missing_and_lands_like_a_hit(setup: Any) -> None:
    fake = FakeGrid(worker({"a.out": b"\x7fELF binary", "notes.txt": b"ok\n"}))
    project, cache, remote = setup(fake)
    observer = Observer()
    outcome = run_remotely(cache, remote, make_task(), observer)
    assert outcome.exit_code == 0 and not outcome.cached
    out = project.output_dir("build")
    assert outcome.output_dir == out
    assert (out / "a.out").read_bytes() == b"\x7fELF binary"
    assert (out / "notes.txt").read_bytes() == b"ok\n"
    assert observer.outputs == [("stdout", b"built\n")]
    source = (project.root / "src" / "main.c").read_bytes()
    assert hashlib.sha256(source).hexdigest() in fake.uploaded  # the input file went
    assert "started remote_queued" in observer.phases
    assert "started remote_executing" in observer.phases
    assert any("executing on" in line for line in observer.logs)
    # The success is in the local store under the task's key: the next lookup is a hit.
    again = cache.lookup(make_task(), {}, print)
    assert again.entry is not None
    again.entry.close()
    # A second remote run of a changed task sends only what changed.
    (project.root / "src" / "extra.h").write_text("#define X 1\n")
    sent = len(fake.uploaded)
    assert run_remotely(cache, remote, make_task(), Observer()).exit_code == 0
    new = fake.uploaded[sent:]
    assert hashlib.sha256(b"#define X 1\n").hexdigest() in new
    assert hashlib.sha256(source).hexdigest() not in new
    remote.close()
    cache.close()


def test_a_remote_failure_is_a_task_failure_with_its_output(setup: Any) -> None:
    fake = FakeGrid(worker({"partial.o": b"half"}, exit_code=2, stdout=b"error: no\n"))
    project, cache, remote = setup(fake)
    observer = Observer()
    outcome = run_remotely(cache, remote, make_task(), observer)
    assert outcome.exit_code == 2 and not outcome.succeeded
    assert observer.outputs == [("stdout", b"error: no\n")]
    assert outcome.output_dir == project.failed_dir("build")  # as a local failure lands
    assert (project.failed_dir("build") / "partial.o").read_bytes() == b"half"
    assert not project.output_dir("build").exists()
    assert cache.lookup(make_task(), {}, print).entry is None  # failures are not kept
    remote.close()


def test_a_result_from_the_servers_cache_is_marked_cached(setup: Any) -> None:
    work = worker({"a.out": b"x"})

    def cached(fake: FakeGrid, action: re_pb2.Action) -> re_pb2.ExecuteResponse:
        response = work(fake, action)
        response.cached_result = True
        return response

    _, cache, remote = setup(FakeGrid(cached))
    observer = Observer()
    outcome = run_remotely(cache, remote, make_task(), observer)
    assert outcome.cached and outcome.exit_code == 0
    assert any("cached" in line and "the cache of the remote execution server" in line
               for line in observer.logs)
    remote.close()


def test_no_cache_skips_the_servers_cache_too(setup: Any) -> None:
    seen: list[bool] = []

    class Watched(FakeGrid):
        def Execute(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            seen.append(request.skip_cache_lookup)
            return super().Execute(request, context)

    _, cache, remote = setup(Watched(worker({"a.out": b"x"})), use_cache=False)
    assert run_remotely(cache, remote, make_task()).exit_code == 0
    assert seen == [True]
    remote.close()


def test_a_broken_stream_is_followed_with_wait_execution(setup: Any) -> None:
    fake = FakeGrid(worker({"a.out": b"x"}), breaks=1)
    _, cache, remote = setup(fake)
    assert run_remotely(cache, remote, make_task()).exit_code == 0
    assert fake.calls.count("Execute") == 1 and fake.calls.count("WaitExecution") == 1
    remote.close()


def test_inputs_the_server_lost_are_sent_again_once(setup: Any) -> None:
    work = worker({"a.out": b"x"})
    lost = [True]

    def forgetful(fake: FakeGrid, action: re_pb2.Action) -> re_pb2.ExecuteResponse:
        if lost[0]:
            lost[0] = False
            fake.blobs.clear()
            return re_pb2.ExecuteResponse(status={"code": 9, "message": "missing blobs"})
        return work(fake, action)

    fake = FakeGrid(forgetful)
    _, cache, remote = setup(fake)
    assert run_remotely(cache, remote, make_task()).exit_code == 0
    assert fake.calls.count("Execute") == 2
    remote.close()


def test_a_refused_action_is_one_line_naming_the_server(setup: Any) -> None:
    def refuse(fake: FakeGrid, action: re_pb2.Action) -> re_pb2.ExecuteResponse:
        return re_pb2.ExecuteResponse(status={"code": 3, "message": "unknown property "
                                              "'dockerNetwork'\nsecond line"})

    _, cache, remote = setup(FakeGrid(refuse))
    with pytest.raises(ExecutionFailed) as info:
        run_remotely(cache, remote, make_task())
    assert str(info.value) == (f"remote execution on {remote.settings.url} failed: it answered "
                               "INVALID_ARGUMENT: unknown property 'dockerNetwork'")
    remote.close()


def test_a_cancelled_run_cancels_the_operation(setup: Any) -> None:
    from buildr_podman.runner import TaskCancelled

    fake = FakeGrid(worker({"a.out": b"x"}), hold=threading.Event())
    _, cache, remote = setup(fake)
    cancelled = threading.Event()
    lookup = cache.lookup(make_task(), {}, print)
    threading.Timer(0.5, cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(TaskCancelled):
        remote.run(make_task(), lookup, {}, Observer(), print, cancelled)
    assert time.monotonic() - started < 5
    assert fake.cancelled and fake.cancelled[0].startswith("operations/")
    assert fake.hold is not None
    fake.hold.set()
    remote.close()


# -- a server that is not there ------------------------------------------------------------------


def test_a_server_that_is_down_fails_each_task_in_one_line_at_once(tmp_path: Path) -> None:
    settings = execution_settings(f"unix:{tmp_path}/nobody.sock", tmp_path)
    channel = grpc.insecure_channel(settings.target)
    client = ExecutionClient(settings, channel)
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(ExecutionFailed) as info:
            client.execute(("0" * 64, 1), skip_cache_lookup=False, stage=print,
                           cancelled=threading.Event())
        assert time.monotonic() - started < 5
        message = str(info.value)
        assert message.startswith(f"remote execution on {settings.url} failed: it cannot be "
                                  "reached (")
        assert "\n" not in message
    channel.close()


def test_missing_inputs_at_execute_are_said_as_such(grid: Any) -> None:
    class Refusing(FakeGrid):
        def Execute(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "blob abc is missing")
            yield  # pragma: no cover

    settings = grid(Refusing(worker({})))
    channel = grpc.insecure_channel(settings.target)
    with pytest.raises(MissingInputs, match="blob abc is missing"):
        ExecutionClient(settings, channel).execute(
            ("0" * 64, 1), skip_cache_lookup=False, stage=print, cancelled=threading.Event())
    channel.close()
    assert Cancelled  # imported for the runner's sake: a cancelled stream raises it


def test_remote_on_the_command_line_replaces_the_address_and_keeps_the_instance(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from buildr_podman.commands.run import _remote_from_command_line
    from buildr_podman.errors import UsageError

    configured = Project(root=tmp_path, out_dir=tmp_path / "out",
                         remote_execution=RemoteExecutionSettings("grpc://grid:1", "grid:1",
                                                                  "main"))
    monkeypatch.chdir(tmp_path)
    found = _remote_from_command_line(configured, "unix:run/grid.sock").remote_execution
    assert found == RemoteExecutionSettings("unix:run/grid.sock",
                                            f"unix:{tmp_path}/run/grid.sock", "main")
    bare = Project(root=tmp_path, out_dir=tmp_path / "out")
    assert _remote_from_command_line(bare, "grpc://10.0.0.1:50051").remote_execution \
        == RemoteExecutionSettings("grpc://10.0.0.1:50051", "10.0.0.1:50051", "")
    with pytest.raises(UsageError, match=r"^--remote grid: it has no scheme"):
        _remote_from_command_line(bare, "grid")
