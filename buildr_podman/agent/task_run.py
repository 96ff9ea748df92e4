"""One task in the agent: run it, stream its output, find its changes, send them back.

Loaded by service.py after the gRPC server listens (see serve()): these modules are not
needed to accept the host's connection.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from buildr_podman._protos.archive_wire import archive_event_prefix
from buildr_podman._protos.buildr.common.v1 import common_pb2
from buildr_podman._protos.buildr.remote.v1 import agent_pb2
from buildr_podman.agent.packer import PackStats, pack_changes
from buildr_podman.agent.process import TaskProcess
from buildr_podman.agent.service import task_base_environment
from buildr_podman.agent.watcher import ChangeSet, ChangeTracker, TrackerLimits

__all__ = ["run_task"]

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STREAMS = {"stdout": agent_pb2.OutputChunk.STREAM_STDOUT,
           "stderr": agent_pb2.OutputChunk.STREAM_STDERR}


def run_task(request: agent_pb2.RunRequest, context: grpc.ServicerContext,
             on_changes: Callable[[ChangeSet], None]) -> Iterator[agent_pb2.RunEvent | bytes]:
    """The task's events: output while it runs, then its archive (as serialized events), then
    one result."""
    started = time.monotonic()
    # The baseline's layers: the inputs, then the outputs laid over them (inputs_from).
    layers = [request.baseline, *request.layers] if request.baseline else None
    tracker = ChangeTracker(request.workspace, layers,
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
    # The host went away or cancelled: stop the task. gRPC also calls this when the call ends
    # normally; by then the group is gone and its pid free for reuse, so it must do nothing.
    ended = threading.Event()
    context.add_callback(lambda: None if ended.is_set() else process.kill())
    for chunk in process.output():
        yield agent_pb2.RunEvent(output=agent_pb2.OutputChunk(stream=STREAMS[chunk.stream],
                                                              data=chunk.data))
    exit_code = process.wait()
    process.kill_leftovers()  # background jobs must not outlive their task in a warm container
    ended.set()
    resolution = tracker.stop_resolving()
    stats = PackStats()
    compress = request.compression != common_pb2.COMPRESSION_S2_STORED
    try:
        # Packing starts with the first changed path found, not after the last. Archive
        # chunks leave as serialized RunEvents (archive_wire.py): no protobuf copies.
        yield from pack_changes(request.workspace, resolution, stats, compress=compress,
                                message_prefix=archive_event_prefix)
    finally:
        # Also when the host went away mid-archive: a warm container's next task is then
        # reset from the complete change set instead of being refused.
        changes = resolution.finish()
        on_changes(changes)
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


def _result(**fields: object) -> agent_pb2.RunEvent:
    return agent_pb2.RunEvent(result=agent_pb2.TaskResult(**fields))  # type: ignore[arg-type]
