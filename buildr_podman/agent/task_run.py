"""One task in the agent: run it, stream its output, find its changes, send them back.

Loaded by service.py after the gRPC server listens (see serve()): these modules are not
needed to accept the host's connection. No protobuf and no gRPC here: service.py converts the
request into a TaskRequest and what this yields into messages.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from buildr_podman.agent.access import ACCESS
from buildr_podman.agent.identity import give_to_user
from buildr_podman.agent.limits import LimitWatch
from buildr_podman.agent.packer import PackStats, pack_changes
from buildr_podman.agent.process import Output, TaskProcess, parse_user
from buildr_podman.agent.service import task_base_environment
from buildr_podman.agent.watcher import ChangeSet, ChangeTracker, TrackerLimits

__all__ = ["TaskRequest", "TaskSummary", "run_task"]

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOT_THE_COPIED_WORKSPACE = (
    "is not the volume the host copied the inputs into: Podman mounts another one (it "
    "runs in another mount namespace than buildr-podman, as under some sandboxes or "
    'systemd services): use container { inputs = "mount" }, or run where Podman runs')


@dataclass(frozen=True)
class TaskRequest:
    """What to run, and where (the RunRequest, in the agent's own terms)."""

    argv: list[str]
    working_dir: str
    workspace: str
    environment: dict[str, str] = field(default_factory=dict)
    baseline: str = ""  #: none: the workspace is snapshot first
    layers: list[str] = field(default_factory=list)  #: outputs laid over the inputs, in order
    user: str = ""  #: "uid:gid", or empty for the agent's own
    timeout_seconds: float = 0.0  #: 0: no limit
    compress: bool = True  #: S2-compressed blocks, or stored ones
    #: inputs = "copy": the inode of the directory the host copied into (0: not checked)
    workspace_inode: int = 0


@dataclass(frozen=True)
class TaskSummary:
    """How the task ended: the last thing run_task yields."""

    exit_code: int
    error: str = ""
    files_returned: int = 0
    bytes_returned: int = 0
    deleted_paths: tuple[str, ...] = ()
    tracking: str = ""
    timed_out: bool = False
    duration_seconds: float = 0.0
    watched_directories: int = 0
    tracking_setup_seconds: float = 0.0
    tracking_resolve_seconds: float = 0.0


def run_task(request: TaskRequest, on_cancel: Callable[[Callable[[], None]], object],
             on_changes: Callable[[ChangeSet], None],
             frame: Callable[[int], bytes]) -> Iterator[Output | bytes | TaskSummary]:
    """The task's events: output while it runs, then its archive (bytes, each chunk behind
    `frame(length)`: the wire's own framing, so that no copy is made), then one summary.
    `on_cancel` registers what stops the task when the caller goes away."""
    started = time.monotonic()
    if request.workspace_inode and os.stat(request.workspace).st_ino != request.workspace_inode:
        on_changes(ChangeSet())  # nothing ran: the workspace is as it was
        yield TaskSummary(exit_code=1, error=f"{request.workspace} {NOT_THE_COPIED_WORKSPACE}")
        return
    ACCESS.begin(request.workspace)
    # The baseline's layers: the inputs, then the outputs laid over them (inputs_from).
    layers = [request.baseline, *request.layers] if request.baseline else None
    tracker = ChangeTracker(request.workspace, layers,
                            TrackerLimits.from_environment(os.environ))
    try:
        home = _give_to_user(request)  # before watching: a chown is no change of the task's
    except OSError as exc:
        on_changes(ChangeSet())  # owners aside, the workspace is as it was
        yield TaskSummary(exit_code=126, error=f"cannot give the workspace to user {request.user} "
                      f"({exc.strerror}): keep the CHOWN capability, or leave user unset",
                      duration_seconds=time.monotonic() - started)
        return
    tracker.start()  # before the task starts, so that nothing it does goes unseen
    limits = LimitWatch(os.environ)
    try:
        process = TaskProcess(list(request.argv), _environment(request, home),
                              request.working_dir, request.user, request.timeout_seconds,
                              pids_limit=limits.rlimit, sample=limits.sample)
    except OSError as exc:
        on_changes(tracker.stop())
        yield TaskSummary(exit_code=127, error=_start_error(request, exc),
                          duration_seconds=time.monotonic() - started)
        return
    # The host went away or cancelled: stop the task. gRPC also calls this when the call ends
    # normally; by then the group is gone and its pid free for reuse, so it must do nothing.
    ended = threading.Event()
    on_cancel(lambda: None if ended.is_set() else process.kill())
    yield from process.output()
    exit_code = process.wait()
    process.kill_leftovers()  # background jobs must not outlive their task in a warm container
    ended.set()
    resolution = tracker.stop_resolving()
    stats = PackStats()
    try:
        # Packing starts with the first changed path found, not after the last. Archive
        # chunks leave framed as the wire wants them (archive_wire.py): no protobuf copies.
        yield from pack_changes(request.workspace, resolution, stats,
                                compress=request.compress, message_prefix=frame)
    finally:
        # Also when the host went away mid-archive: a warm container's next task is then
        # reset from the complete change set instead of being refused.
        changes = resolution.finish()
        ACCESS.restore()  # the modes the task left, on what was opened up to be read
        on_changes(changes)
    # A task that hit a limit failed as itself, whatever its shell made of the failed fork;
    # paths the agent could not read are named (they did not come back).
    error = "; ".join(filter(None, (limits.verdict(), ACCESS.problems_error())))
    yield TaskSummary(exit_code=exit_code, error=error, files_returned=stats.files,
                      bytes_returned=stats.bytes, deleted_paths=tuple(changes.deleted),
                      tracking=changes.tracking, timed_out=process.timed_out,
                      duration_seconds=time.monotonic() - started,
                      watched_directories=changes.watched_directories,
                      tracking_setup_seconds=changes.setup_seconds,
                      tracking_resolve_seconds=changes.resolve_seconds)


def _start_error(request: TaskRequest, exc: OSError) -> str:
    """Why the task's process could not start, and what to change: one line."""
    program = request.argv[0] if request.argv else "?"
    if exc.filename == request.working_dir:
        return (f"cannot enter the working directory {request.working_dir!r} "
                f"({exc.strerror}): set working_dir to a directory of the workspace")
    if exc.errno == errno.ENOENT:
        return (f"the shell {program!r} is not in the image: set shell to a program the "
                'image has, like "/bin/sh"')
    return f"cannot start the shell {program!r} ({exc.strerror}): set shell to another one"


def _give_to_user(request: TaskRequest) -> str | None:
    """For a task with `user`: the workspace becomes theirs and they get a HOME (identity.py)."""
    identity = parse_user(request.user)
    if identity is None:
        return None
    return give_to_user(request.workspace, *identity)


def _environment(request: TaskRequest, home: str | None = None) -> dict[str, str]:
    """The image's environment (as the agent received it), cleaned of the frozen agent's own
    loader settings, plus the workspace and the task's variables. A task of another user gets
    a HOME it can write (the image's is root's), unless it sets one itself."""
    env = task_base_environment(os.environ)
    env.setdefault("PATH", BASE_PATH)
    env.setdefault("HOME", "/root")
    if home is not None:
        env["HOME"] = home
    env["BUILDR_WORKSPACE"] = request.workspace
    env.update(request.environment)
    return env

