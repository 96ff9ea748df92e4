"""The agent's gRPC servicer: the only agent module that speaks protobuf.

It converts messages and delegates: task_run.py runs a task (process.py, watcher.py and
packer.py under it; loaded once the server listens, so that the host can connect sooner).
Errors of the agent itself become a TaskResult.error, so the host always gets one final result
it can print.
"""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from functools import partial
from typing import TYPE_CHECKING, Any

# Before grpc is imported: its fork handlers restart gRPC threads in every forked child, and a
# task with `user` is started by fork() (setuid rules out vfork), so it died of SIGSEGV
# before exec. The image's own value, if any, is given back to the task.
FORK_SUPPORT = "GRPC_ENABLE_FORK_SUPPORT"
_IMAGE_FORK_SUPPORT = os.environ.get(FORK_SUPPORT)
os.environ[FORK_SUPPORT] = "false"

import grpc

from buildr_podman import __version__
from buildr_podman._protos.archive_wire import AGENT_SERVICE, archive_event_prefix, serialize
from buildr_podman._protos.buildr.common.v1 import common_pb2
from buildr_podman._protos.buildr.remote.v1 import agent_pb2, agent_pb2_grpc

if TYPE_CHECKING:
    from buildr_podman.agent.task_run import TaskRequest
    from buildr_podman.agent.watcher import ChangeSet

__all__ = ["PROTOCOL_VERSION", "AgentService", "add_agent_service", "deletion_events"]

PROTOCOL_VERSION = common_pb2.PROTOCOL_VERSION_2
SUPPORTED_COMPRESSIONS = (common_pb2.COMPRESSION_S2_STORED, common_pb2.COMPRESSION_S2)
BUSY_WAIT_SECONDS = 2.0
DELETED_BATCH_BYTES = 1 << 20  # far below gRPC's message limit, whatever one path's length
PATH_OVERHEAD = 6  # a path's tag and length in the message
STREAMS = {"stdout": agent_pb2.OutputChunk.STREAM_STDOUT,
           "stderr": agent_pb2.OutputChunk.STREAM_STDERR}


class AgentService(agent_pb2_grpc.AgentServicer):
    """Runs one task at a time in the workspace it was started for."""

    def __init__(self, on_shutdown: threading.Event) -> None:
        self._busy = threading.Lock()
        self._on_shutdown = on_shutdown
        self._undo_previous: Callable[[], None] | None = None
        self._workspace_clean = True
        self._laid: tuple[str, ...] | None = None  # the outputs laid in (inputs_from), once

    def Hello(self, request: agent_pb2.HelloRequest,
              context: grpc.ServicerContext) -> agent_pb2.HelloResponse:
        if request.protocol_version != PROTOCOL_VERSION:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"agent {__version__} speaks protocol {PROTOCOL_VERSION}, the host "
                          f"{request.host_version} speaks {request.protocol_version}: "
                          "rebuild the agent with the host's version")
        chosen = next((c for c in request.accepted_compressions if c in SUPPORTED_COMPRESSIONS),
                      common_pb2.COMPRESSION_S2)
        return agent_pb2.HelloResponse(protocol_version=PROTOCOL_VERSION,
                                       agent_version=__version__, compression=chosen)

    def Run(self, request: agent_pb2.RunRequest,
            context: grpc.ServicerContext) -> Iterator[agent_pb2.RunEvent | bytes]:
        # A short wait: the previous stream may still be closing after its result was sent.
        if not self._busy.acquire(timeout=BUSY_WAIT_SECONDS):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the agent is already running a task")
        busy = True
        try:
            self._reset_workspace(context)
            self._workspace_clean = False  # until this task's change set is known
            self._lay_outputs(request, context)
            from buildr_podman.agent.task_run import TaskSummary, run_task

            try:
                for event in run_task(_task_request(request), context.add_callback,
                                      self._remember_changes(request), archive_event_prefix):
                    if isinstance(event, TaskSummary):
                        # Free before the host has the result: it sends the next task at
                        # once, while this generator is only resumed (and ended) later.
                        self._busy.release()
                        busy = False
                        yield from deletion_events(event.deleted_paths)
                        result = asdict(event)
                        del result["deleted_paths"]  # sent just before, in bounded messages
                        yield agent_pb2.RunEvent(result=agent_pb2.TaskResult(**result))
                    elif isinstance(event, bytes):
                        yield event  # an archive chunk, framed already (archive_wire.py)
                    else:
                        yield agent_pb2.RunEvent(output=agent_pb2.OutputChunk(
                            stream=STREAMS[event.stream], data=event.data))
            except Exception as exc:  # noqa: BLE001 - the host would only see "UNKNOWN"
                context.abort(grpc.StatusCode.INTERNAL,
                              f"the agent failed: {describe_failure(exc)}")
        finally:
            if busy:
                self._busy.release()

    def _reset_workspace(self, context: grpc.ServicerContext) -> None:
        """A warm container's next task starts from the baseline: undo the previous task."""
        if self._undo_previous is not None:
            undo, self._undo_previous = self._undo_previous, None
            try:
                undo()
            except OSError as exc:
                self._workspace_clean = False
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"cannot reset the workspace for the next task: {exc}")
        if not self._workspace_clean:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "the previous task was interrupted and its changes are unknown: "
                          "run the next task in a new container")

    def _lay_outputs(self, request: agent_pb2.RunRequest,
                     context: grpc.ServicerContext) -> None:
        """Before the container's first task, the outputs named in inputs_from go into the
        workspace (agent/layers.py); every later task finds them there as the baseline does.
        The host never sends a task that needs other ones to this container."""
        layers = tuple(request.layers)
        if self._laid is None:
            from buildr_podman.agent.layers import lay_outputs

            try:
                lay_outputs(request.workspace, list(layers))
            except OSError as exc:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"cannot lay the outputs of inputs_from into the workspace: {exc}")
            self._laid = layers
        elif self._laid != layers:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "this container's workspace holds the outputs of other modules: run "
                          "the task in a new container")

    def _remember_changes(self, request: agent_pb2.RunRequest) -> Callable[[ChangeSet], None]:
        from buildr_podman.agent.revert import revert
        from buildr_podman.agent.snapshot import Baseline

        def remember(changes: ChangeSet) -> None:
            # Without a baseline there is nothing to go back to: the workspace carries over.
            if request.baseline:
                baseline = Baseline([request.baseline, *request.layers])
                self._undo_previous = partial(revert, request.workspace, baseline, changes)
            self._workspace_clean = True
        return remember

    def Shutdown(self, request: agent_pb2.ShutdownRequest,
                 context: grpc.ServicerContext) -> agent_pb2.ShutdownResponse:
        self._on_shutdown.set()
        return agent_pb2.ShutdownResponse()


def _task_request(request: agent_pb2.RunRequest) -> TaskRequest:
    from buildr_podman.agent.task_run import TaskRequest

    return TaskRequest(argv=list(request.argv), working_dir=request.working_dir,
                       workspace=request.workspace, environment=dict(request.environment),
                       baseline=request.baseline, layers=list(request.layers),
                       user=request.user, timeout_seconds=request.timeout_seconds,
                       compress=request.compression != common_pb2.COMPRESSION_S2_STORED,
                       workspace_inode=request.workspace_inode)


def deletion_events(deleted: Iterable[str]) -> Iterator[agent_pb2.RunEvent]:
    """The deleted paths as bytes (a name need not be UTF-8), in messages of at most about
    DELETED_BATCH_BYTES: `rm -rf` of a 45,000-file tree is many small messages, never one past
    gRPC's limit, as it was when the result carried them all."""
    batch: list[bytes] = []
    size = 0
    for rel in deleted:
        path = os.fsencode(rel)  # back to the bytes the file system gave (surrogateescape)
        if batch and size + len(path) > DELETED_BATCH_BYTES:
            yield agent_pb2.RunEvent(deleted=agent_pb2.DeletedPaths(paths=batch))
            batch, size = [], 0
        batch.append(path)
        size += len(path) + PATH_OVERHEAD
    if batch:
        yield agent_pb2.RunEvent(deleted=agent_pb2.DeletedPaths(paths=batch))


def describe_failure(exc: BaseException) -> str:
    """One line with the cause: the exception's own words, the file it names, and where in
    the agent it was raised (a bug's only trace: the agent's stderr is nowhere to be seen)."""
    words = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        words = exc.strerror + (f": {exc.filename!r}" if exc.filename is not None else "")
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (in {os.path.basename(frame[0].filename)}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {words}{where}"


def task_base_environment(agent_env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """PyInstaller's bootloader points LD_LIBRARY_PATH at the bundle (saving the original in
    LD_LIBRARY_PATH_ORIG) and sets _PYI_* variables; a task inheriting them would load the
    bundle's libssl or libstdc++ instead of the image's."""
    env = {k: v for k, v in agent_env.items()
           if not k.startswith(("_PYI", "PYINSTALLER")) and k != "LD_LIBRARY_PATH_ORIG"}
    env.pop("LD_LIBRARY_PATH", None)
    if agent_env.get("LD_LIBRARY_PATH_ORIG"):
        env["LD_LIBRARY_PATH"] = agent_env["LD_LIBRARY_PATH_ORIG"]
    env.pop(FORK_SUPPORT, None)  # the agent's own setting (see the top of this module)
    env.pop("BUILDR_TASK_PIDS_LIMIT", None)  # for the agent (agent/limits.py)
    if _IMAGE_FORK_SUPPORT is not None:
        env[FORK_SUPPORT] = _IMAGE_FORK_SUPPORT
    return env


def serve(socket_path: str) -> int:
    """Serves until SIGTERM or a Shutdown call; returns the process exit code."""
    import signal
    from concurrent import futures

    shutdown = threading.Event()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_send_message_length", 8 << 20)])
    add_agent_service(AgentService(shutdown), server)
    if os.path.exists(socket_path):
        os.unlink(socket_path)  # left by an agent that was killed; ours to replace
    server.add_insecure_port(f"unix:{socket_path}")
    server.start()
    # The task's modules (~20 ms), the allocator settings and the checksum load while the
    # host connects and says hello, not before the socket exists: agent start-up is on the
    # critical path of every cold run.
    threading.Thread(target=_load_task_modules, name="preload", daemon=True).start()
    # PID 1 in a container gets no default SIGTERM action: handle it, or removal waits 10 s.
    signal.signal(signal.SIGTERM, lambda *_: shutdown.set())
    signal.signal(signal.SIGINT, lambda *_: shutdown.set())
    shutdown.wait()
    server.stop(grace=1).wait()
    return 0


def add_agent_service(service: AgentService, server: grpc.Server) -> None:
    """agent_pb2_grpc.add_AgentServicer_to_server, but archive bytes skip protobuf: Run sends
    events that are already serialized (bytes) as they are (archive_wire.py)."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Hello": grpc.unary_unary_rpc_method_handler(
            service.Hello, request_deserializer=agent_pb2.HelloRequest.FromString,
            response_serializer=agent_pb2.HelloResponse.SerializeToString),
        "Run": grpc.unary_stream_rpc_method_handler(
            service.Run, request_deserializer=agent_pb2.RunRequest.FromString,
            response_serializer=serialize),
        "Shutdown": grpc.unary_unary_rpc_method_handler(
            service.Shutdown, request_deserializer=agent_pb2.ShutdownRequest.FromString,
            response_serializer=agent_pb2.ShutdownResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(AGENT_SERVICE, handlers),))
    server.add_registered_method_handlers(AGENT_SERVICE, handlers)  # as the generated code does


def _load_task_modules() -> None:
    import buildr_podman.agent.revert
    import buildr_podman.agent.task_run  # noqa: F401
    from buildr_podman.agent.malloc_tuning import keep_freed_memory
    from buildr_podman.s2._format import masked_crc

    keep_freed_memory()  # before the first archive chunk: see malloc_tuning.py
    # The checksum's package (~20 ms to import: it reads its own metadata) now, while the
    # task runs, not when the archive is framed: even an empty archive has one chunk.
    masked_crc(b"")
