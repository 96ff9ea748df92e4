"""The agent's gRPC servicer: the only agent module that speaks protobuf.

It converts messages and delegates: process.py runs the task, watcher.py finds the changes,
packer.py streams them back. Errors of the agent itself become a TaskResult.error, so the host
always gets one final result it can print.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

# Before grpc is imported: its fork handlers restart gRPC threads in every forked child, and a
# task with `user` is started by fork() (setuid rules out vfork), so it died of SIGSEGV
# before exec. The image's own value, if any, is given back to the task.
FORK_SUPPORT = "GRPC_ENABLE_FORK_SUPPORT"
_IMAGE_FORK_SUPPORT = os.environ.get(FORK_SUPPORT)
os.environ[FORK_SUPPORT] = "false"

import grpc

from buildr_podman import __version__
from buildr_podman._protos.buildr.common.v1 import common_pb2
from buildr_podman._protos.buildr.remote.v1 import agent_pb2, agent_pb2_grpc
from buildr_podman.agent.packer import PackStats, pack_changes
from buildr_podman.agent.process import TaskProcess
from buildr_podman.agent.revert import revert
from buildr_podman.agent.watcher import ChangeSet, ChangeTracker, TrackerLimits

__all__ = ["PROTOCOL_VERSION", "AgentService"]

PROTOCOL_VERSION = common_pb2.PROTOCOL_VERSION_1
SUPPORTED_COMPRESSIONS = (common_pb2.COMPRESSION_S2_STORED, common_pb2.COMPRESSION_S2)
BUSY_WAIT_SECONDS = 2.0
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STREAMS = {"stdout": agent_pb2.OutputChunk.STREAM_STDOUT,
           "stderr": agent_pb2.OutputChunk.STREAM_STDERR}


class AgentService(agent_pb2_grpc.AgentServicer):
    """Runs one task at a time in the workspace it was started for."""

    def __init__(self, on_shutdown: threading.Event) -> None:
        self._busy = threading.Lock()
        self._on_shutdown = on_shutdown
        self._undo_previous: Callable[[], None] | None = None
        self._workspace_clean = True

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
            context: grpc.ServicerContext) -> Iterator[agent_pb2.RunEvent]:
        # A short wait: the previous stream may still be closing after its result was sent.
        if not self._busy.acquire(timeout=BUSY_WAIT_SECONDS):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the agent is already running a task")
        busy = True
        try:
            self._reset_workspace(context)
            self._workspace_clean = False  # until this task's change set is known
            for event in _run_task(request, context, self._remember_changes(request)):
                if event.HasField("result"):
                    # Free before the host has the result: it sends the next task at once,
                    # while this generator is only resumed (and ended) later by gRPC.
                    self._busy.release()
                    busy = False
                yield event
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

    def _remember_changes(self, request: agent_pb2.RunRequest) -> Callable[[ChangeSet], None]:
        def remember(changes: ChangeSet) -> None:
            # Without a baseline there is nothing to go back to: the workspace carries over.
            if request.baseline:
                self._undo_previous = partial(revert, request.workspace, request.baseline,
                                              changes)
            self._workspace_clean = True
        return remember

    def Shutdown(self, request: agent_pb2.ShutdownRequest,
                 context: grpc.ServicerContext) -> agent_pb2.ShutdownResponse:
        self._on_shutdown.set()
        return agent_pb2.ShutdownResponse()


def _run_task(request: agent_pb2.RunRequest, context: grpc.ServicerContext,
              on_changes: Callable[[ChangeSet], None]) -> Iterator[agent_pb2.RunEvent]:
    started = time.monotonic()
    tracker = ChangeTracker(request.workspace, request.baseline or None,
                            TrackerLimits.from_environment(os.environ))
    tracker.start()  # before the task starts, so that nothing it does goes unseen
    try:
        process = TaskProcess(list(request.argv), _environment(request), request.working_dir,
                              request.user, request.timeout_seconds)
    except OSError as exc:
        on_changes(tracker.stop())
        yield _result(exit_code=127, error=_start_error(request, exc),
                      duration_seconds=time.monotonic() - started)
        return
    context.add_callback(process.kill)  # the host went away or cancelled: stop the task
    for chunk in process.output():
        yield agent_pb2.RunEvent(output=agent_pb2.OutputChunk(stream=STREAMS[chunk.stream],
                                                              data=chunk.data))
    exit_code = process.wait()
    process.kill_leftovers()  # background jobs must not outlive their task in a warm container
    changes = tracker.stop()
    on_changes(changes)
    stats = PackStats()
    compress = request.compression != common_pb2.COMPRESSION_S2_STORED
    for data in pack_changes(request.workspace, changes.returned, stats, compress=compress):
        yield agent_pb2.RunEvent(archive=agent_pb2.ArchiveChunk(data=data))
    yield _result(exit_code=exit_code, files_returned=stats.files, bytes_returned=stats.bytes,
                  deleted_paths=changes.deleted, tracking=changes.tracking,
                  timed_out=process.timed_out, duration_seconds=time.monotonic() - started,
                  watched_directories=changes.watched_directories,
                  tracking_setup_seconds=changes.setup_seconds,
                  tracking_resolve_seconds=changes.resolve_seconds)


def _start_error(request: agent_pb2.RunRequest, exc: OSError) -> str:
    """Why the task's process could not start, and what to change: one line."""
    program = request.argv[0] if request.argv else "?"
    if exc.filename == request.working_dir:
        return (f"cannot enter the working directory {request.working_dir!r} "
                f"({exc.strerror}): set working_dir to a directory of the workspace")
    if exc.errno == errno.ENOENT:
        return (f"the shell {program!r} is not in the image: set shell to a program the "
                'image has, like "/bin/sh"')
    return f"cannot start the shell {program!r} ({exc.strerror}): set shell to another one"


def _environment(request: agent_pb2.RunRequest) -> dict[str, str]:
    """The image's environment (as the agent received it), cleaned of the frozen agent's own
    loader settings, plus the workspace and the task's variables."""
    env = task_base_environment(os.environ)
    env.setdefault("PATH", BASE_PATH)
    env.setdefault("HOME", "/root" if not request.user else "/tmp")
    env["BUILDR_WORKSPACE"] = request.workspace
    env.update(request.environment)
    return env


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
    if _IMAGE_FORK_SUPPORT is not None:
        env[FORK_SUPPORT] = _IMAGE_FORK_SUPPORT
    return env


def _result(**fields: object) -> agent_pb2.RunEvent:
    return agent_pb2.RunEvent(result=agent_pb2.TaskResult(**fields))  # type: ignore[arg-type]


def serve(socket_path: str) -> int:
    """Serves until SIGTERM or a Shutdown call; returns the process exit code."""
    import signal
    from concurrent import futures

    shutdown = threading.Event()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_send_message_length", 8 << 20)])
    agent_pb2_grpc.add_AgentServicer_to_server(AgentService(shutdown), server)
    if os.path.exists(socket_path):
        os.unlink(socket_path)  # left by an agent that was killed; ours to replace
    server.add_insecure_port(f"unix:{socket_path}")
    server.start()
    # PID 1 in a container gets no default SIGTERM action: handle it, or removal waits 10 s.
    signal.signal(signal.SIGTERM, lambda *_: shutdown.set())
    signal.signal(signal.SIGINT, lambda *_: shutdown.set())
    shutdown.wait()
    server.stop(grace=1).wait()
    return 0
