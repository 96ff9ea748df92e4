"""The host's side of the agent protocol: one client per agent socket; errors are raised."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from buildr_podman import __version__
from buildr_podman._protos.archive_wire import AGENT_SERVICE, parse_run_event
from buildr_podman._protos.buildr.common.v1 import common_pb2
from buildr_podman._protos.buildr.remote.v1 import agent_pb2, agent_pb2_grpc
from buildr_podman.errors import AgentError
from buildr_podman.model import TaskResult
from buildr_podman.podman.connection import socket_accepts
from buildr_podman.podman.deadline import AgentTimeout, HostDeadline

__all__ = ["PROTOCOL_VERSION", "AgentClient", "AgentEvent", "LogLine", "OutputChunk", "RunSpec"]

PROTOCOL_VERSION = common_pb2.PROTOCOL_VERSION_2
# Stored blocks first: on a local unix socket compression costs more time than it saves.
ACCEPTED_COMPRESSIONS = (common_pb2.COMPRESSION_S2_STORED, common_pb2.COMPRESSION_S2)
MAX_MESSAGE = 8 << 20
RECEIVE_WINDOW = 4 << 20  # bytes of an event stream gRPC may take in ahead of the reader
POLL_INTERVAL = 0.003  # seconds between looks at the agent's socket while it starts


@dataclass(frozen=True)
class RunSpec:
    """What the agent is asked to run (the RunRequest, in the host's own terms)."""

    task_name: str
    argv: list[str]
    working_dir: str
    workspace: str
    environment: dict[str, str] = field(default_factory=dict)
    baseline: str = ""  #: none: the agent snapshots the workspace instead
    user: str = ""
    timeout_seconds: float = 0.0
    layers: list[str] = field(default_factory=list)
    workspace_inode: int = 0  #: of the volume the inputs were copied into; 0: not checked


@dataclass(frozen=True)
class OutputChunk:
    stream: str  #: "stdout" or "stderr"
    data: bytes


@dataclass(frozen=True)
class LogLine:
    message: str


#: what run() yields: output, the agent's log lines, archive bytes, and one result at the end
AgentEvent = OutputChunk | LogLine | memoryview | TaskResult
STREAM_NAMES = {agent_pb2.OutputChunk.STREAM_STDOUT: "stdout",
                agent_pb2.OutputChunk.STREAM_STDERR: "stderr"}


class AgentClient:
    """Talks to one agent over its unix socket."""

    def __init__(self, socket_path: str) -> None:
        self._socket_path = socket_path
        self._channel = grpc.insecure_channel(
            f"unix:{socket_path}",
            options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                     ("grpc.enable_http_proxy", 0),
                     # gRPC's default first reconnect waits 1 s: far too long on a local socket.
                     ("grpc.initial_reconnect_backoff_ms", 20),
                     ("grpc.min_reconnect_backoff_ms", 20),
                     ("grpc.max_reconnect_backoff_ms", 500),
                     # A fixed receive window: with its bandwidth-delay probe, gRPC grew it
                     # to tens of MB, which this process then held whenever its writes to
                     # disk fell behind (a 256 MiB output peaked at 149 MB, the limit being
                     # 150). 4 MB holds the same throughput here.
                     ("grpc.http2.bdp_probe", 0),
                     ("grpc.http2.lookahead_bytes", RECEIVE_WINDOW)])
        self._stub = agent_pb2_grpc.AgentStub(self._channel)
        # The call that carries archives skips protobuf for their bytes (archive_wire.py).
        self._run = self._channel.unary_stream(
            f"/{AGENT_SERVICE}/Run", request_serializer=agent_pb2.RunRequest.SerializeToString,
            response_deserializer=parse_run_event,
            _registered_method=True)  # type: ignore[call-arg]  # as the generated stub does
        self.compression = common_pb2.COMPRESSION_S2

    def wait_ready(self, timeout: float, still_starting: Callable[[], bool]) -> None:
        """Waits for the agent to listen; `still_starting` says whether it can still come up.
        It is asked at every poll, so it must be cheap (TaskPod.still_running is)."""
        deadline = time.monotonic() + timeout
        # Poll the socket itself, cheaply: gRPC would back off between failed connects.
        while not socket_accepts(self._socket_path):
            if time.monotonic() > deadline:
                raise AgentError(f"the agent did not start listening within {timeout:.0f} s")
            if not still_starting():
                raise AgentError("the agent exited before it listened (if its bundle is "
                                 "damaged, buildr-podman clean --all rebuilds it)")
            time.sleep(POLL_INTERVAL)
        try:
            grpc.channel_ready_future(self._channel).result(
                timeout=max(1.0, deadline - time.monotonic()))
        except grpc.FutureTimeoutError:
            raise AgentError("the agent's socket accepts connections but gRPC does not "
                             "answer") from None

    def hello(self) -> agent_pb2.HelloResponse:
        request = agent_pb2.HelloRequest(protocol_version=PROTOCOL_VERSION,
                                         host_version=__version__,
                                         accepted_compressions=ACCEPTED_COMPRESSIONS)
        try:
            response: agent_pb2.HelloResponse = self._stub.Hello(request, timeout=30)
        except grpc.RpcError as exc:
            raise AgentError(f"agent handshake failed: {_describe(exc)}") from exc
        if response.protocol_version != PROTOCOL_VERSION:
            raise AgentError(f"agent {response.agent_version} speaks protocol "
                             f"{response.protocol_version}, this host {PROTOCOL_VERSION}: "
                             "run buildr-podman clean --all to rebuild the agent")
        self.compression = response.compression
        return response

    def run(self, spec: RunSpec) -> Iterator[AgentEvent]:
        """The task's events in order, ending with exactly one result; an archive chunk comes
        as its data alone (a view of the received message). Protobuf stays in here. A task
        with a timeout is watched by a HostDeadline: an agent that overruns it raises
        AgentTimeout."""
        request = agent_pb2.RunRequest(
            task_name=spec.task_name, argv=spec.argv, environment=spec.environment,
            working_dir=spec.working_dir, workspace=spec.workspace, baseline=spec.baseline,
            user=spec.user, timeout_seconds=spec.timeout_seconds, layers=spec.layers,
            workspace_inode=spec.workspace_inode, compression=self.compression)
        stream = self._run(request)
        deadline = (HostDeadline(request.timeout_seconds, stream.cancel)
                    if request.timeout_seconds > 0 else None)
        deleted: list[str] = []  # they come before the result, which carries them on
        try:
            got_result = False
            for event in stream:
                if not isinstance(event, memoryview) and event.HasField("deleted"):
                    deleted.extend(_paths(event.deleted))
                    continue
                converted = _converted(event, deleted)
                got_result = isinstance(converted, TaskResult)
                if deadline is not None and (got_result or isinstance(converted, memoryview)):
                    deadline.task_ended()
                if converted is not None:
                    yield converted
            if not got_result:
                raise AgentError("the agent closed the stream without a result")
        except grpc.RpcError as exc:
            if deadline is not None and deadline.expired:
                raise AgentTimeout(deadline.message()) from None
            raise AgentError(_stopped(exc)) from exc
        finally:
            if deadline is not None:
                deadline.stop()
            stream.cancel()  # no-op once complete; stops the task if we leave early

    def shutdown(self) -> None:
        """Asks the agent to exit; a dead agent is fine here."""
        try:
            self._stub.Shutdown(agent_pb2.ShutdownRequest(), timeout=2)
        except grpc.RpcError:
            pass

    def close(self) -> None:
        self._channel.close()


def _converted(event: agent_pb2.RunEvent | memoryview, deleted: list[str]) -> AgentEvent | None:
    """An event in the host's own terms (None for a kind this host does not know); a result
    carries the `deleted` paths that came before it."""
    if isinstance(event, memoryview):
        return event
    kind = event.WhichOneof("event")
    if kind == "archive":
        return memoryview(event.archive.data)
    if kind == "output":
        return OutputChunk(STREAM_NAMES.get(event.output.stream, "stdout"), event.output.data)
    if kind == "log":
        return LogLine(event.log.message)
    if kind == "result":
        result = event.result
        return TaskResult(exit_code=result.exit_code, error=result.error,
                          files_returned=result.files_returned,
                          bytes_returned=result.bytes_returned,
                          deleted_paths=tuple(deleted), tracking=result.tracking,
                          timed_out=result.timed_out, duration_seconds=result.duration_seconds,
                          watched_directories=result.watched_directories,
                          tracking_setup_seconds=result.tracking_setup_seconds,
                          tracking_resolve_seconds=result.tracking_resolve_seconds)
    return None


def _paths(deleted: agent_pb2.DeletedPaths) -> Iterator[str]:
    """Paths as the host's os functions take them: bytes that are not UTF-8 are carried as
    surrogates (os.fsdecode), and encode back to the same bytes."""
    return map(os.fsdecode, deleted.paths)


def _stopped(exc: grpc.RpcError) -> str:
    """Why the event stream broke off; a lost connection means the agent itself is gone."""
    code = exc.code() if hasattr(exc, "code") else None
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return (f"the agent stopped mid-task ({_describe(exc)}): its container was killed or "
                "removed from outside, or ran out of memory; run the task again")
    details = exc.details() if hasattr(exc, "details") else None
    if code == grpc.StatusCode.INTERNAL and details and details.startswith("the agent failed"):
        return str(details)  # the agent said what went wrong, and it was not killed
    return f"the agent stopped mid-task: {_describe(exc)}"


def _describe(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{details} ({code.name})" if code else str(details)
