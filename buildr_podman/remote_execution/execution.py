"""One Execute call: an Action sent to a REAPI Execution service and followed to its result.

Execute answers with a stream of longrunning Operations: their metadata says the stage
(checking the server's cache, queued, executing), the last one is `done` and holds the
ExecuteResponse. A stream that breaks (the server restarted, a proxy timed out) is followed
again with WaitExecution under the operation's name; an operation the server no longer knows is
executed again (an Action is idempotent: same digest, same result). Cancelling the run cancels
the stream and the operation, so that the worker stops too.

Every failure is one line naming the server (ExecutionFailed); the first one that says the
server is unusable (down, refusing) fails every later call of the run at once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import grpc

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2_grpc as re_grpc,
)
from buildr_podman._protos.google.longrunning import operations_pb2, operations_pb2_grpc
from buildr_podman.cache.tree import Digest, proto_digest
from buildr_podman.errors import BuildrError
from buildr_podman.remote_execution.settings import RemoteExecutionSettings

__all__ = ["ExecutionClient", "ExecutionFailed", "MissingInputs", "STAGES"]

#: what each stage is called in phases and logs
STAGES = {re_pb2.ExecutionStage.CACHE_CHECK: "checking the cache",
          re_pb2.ExecutionStage.QUEUED: "queued",
          re_pb2.ExecutionStage.EXECUTING: "executing"}
CONNECT_SECONDS = 5.0  #: how long the first answer of a call may take (an idle server: ms)
REFOLLOWS = 5  #: broken streams followed again in a row before the task fails
REFOLLOW_DELAY = 0.5  #: seconds before following again, doubled each time in a row
MAX_DELAY = 2.0  #: up to this
WATCH_SECONDS = 0.1  #: how soon a cancelled run cancels its calls
#: a stream that breaks with one of these is followed again; any other code is an answer
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN,
                       grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED})


class ExecutionFailed(BuildrError):
    """The server could not run the task; one line that names it."""


class MissingInputs(Exception):
    """The server lost inputs it was sent (FAILED_PRECONDITION): send them again."""


class Cancelled(Exception):
    """The run was cancelled while the task ran remotely (its operation is cancelled too)."""


@dataclass
class _Followed:
    """The operation an Execute call is following."""

    name: str = ""  #: as the server named it (WaitExecution takes it)
    read: int = 0  #: Operations read so far


class ExecutionClient:
    """One run's Execution calls to one server; thread-safe."""

    def __init__(self, settings: RemoteExecutionSettings, channel: grpc.Channel) -> None:
        self.settings = settings
        self._channel = channel
        self._lock = threading.Lock()
        self.failure: str | None = None  #: why the server is unusable for the rest of the run

    def execute(self, action: Digest, *, skip_cache_lookup: bool,
                stage: Callable[[str], None],
                cancelled: threading.Event) -> re_pb2.ExecuteResponse:
        """The ExecuteResponse of `action`, its stages said to `stage` as they come. Raises
        ExecutionFailed, MissingInputs, Cancelled."""
        self._check()
        request = re_pb2.ExecuteRequest(instance_name=self.settings.instance_name,
                                        action_digest=proto_digest(action),
                                        skip_cache_lookup=skip_cache_lookup,
                                        digest_function=re_pb2.DigestFunction.SHA256)
        stub = re_grpc.ExecutionStub(self._channel)
        followed = _Followed()
        breaks = 0  # in a row, with nothing read in between
        while True:
            call = (stub.WaitExecution(re_pb2.WaitExecutionRequest(name=followed.name))
                    if followed.name else stub.Execute(request))
            read = followed.read
            try:
                done = self._follow(call, followed, cancelled, stage)
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.NOT_FOUND and followed.name:
                    followed.name = ""  # the server forgot the operation: execute it again
                    continue
                if code == grpc.StatusCode.FAILED_PRECONDITION:
                    raise MissingInputs(_first_line(exc.details())) from exc
                if code not in TRANSIENT or not followed.name:  # never reached, or refused
                    raise self._failed(code, exc.details()) from exc
                why = f"{code.name}: {exc.details()}"
            else:
                if done is not None:
                    return self._response(done)
                why = "its answers stopped before the task's end"
            # The stream broke or ended before the operation did: follow it again, later.
            breaks = 1 if followed.read > read else breaks + 1
            if breaks > REFOLLOWS:
                raise self._failed(grpc.StatusCode.UNKNOWN, why)
            time.sleep(min(REFOLLOW_DELAY * 2 ** (breaks - 1), MAX_DELAY))

    def _follow(self, call: Any, followed: _Followed, cancelled: threading.Event,
                stage: Callable[[str], None]) -> operations_pb2.Operation | None:
        """Reads the call's Operations until one is done (returned) or the stream ends
        (None). A cancelled run cancels the call and the operation, and raises Cancelled."""
        finished = threading.Event()

        def watch() -> None:
            while not finished.wait(WATCH_SECONDS):
                if cancelled.is_set():
                    call.cancel()
                    return

        threading.Thread(target=watch, name="buildr-remote-watch", daemon=True).start()
        try:
            for operation in cast(Iterable[operations_pb2.Operation], call):
                followed.name = operation.name or followed.name
                followed.read += 1
                metadata = re_pb2.ExecuteOperationMetadata()
                if operation.metadata.Unpack(metadata) and metadata.stage in STAGES:
                    stage(STAGES[metadata.stage])
                if operation.done:
                    return operation
        except grpc.RpcError:
            if not cancelled.is_set():
                raise
        except BaseException:  # the run's own cancellation, raised by `stage`'s observer
            if cancelled.is_set():
                self._cancel_operation(followed.name)
            raise
        finally:
            finished.set()
            call.cancel()  # a no-op once it has ended
        if cancelled.is_set():
            self._cancel_operation(followed.name)
            raise Cancelled
        return None

    def _response(self, operation: operations_pb2.Operation) -> re_pb2.ExecuteResponse:
        if operation.HasField("error") and operation.error.code != 0:
            raise self._status_failed(operation.error.code, operation.error.message)
        response = re_pb2.ExecuteResponse()
        if not operation.response.Unpack(response):
            raise ExecutionFailed(f"remote execution on {self.settings.url} failed: its answer "
                                  f"is not an ExecuteResponse ({operation.response.type_url})")
        code = response.status.code
        if code == grpc.StatusCode.FAILED_PRECONDITION.value[0]:
            raise MissingInputs(response.status.message)
        if code not in (0, grpc.StatusCode.DEADLINE_EXCEEDED.value[0]):
            raise self._status_failed(code, response.status.message or response.message)
        return response

    def _cancel_operation(self, name: str) -> None:
        """Asks the server to stop the operation (its worker stops the task); best effort."""
        if not name:
            return
        with contextlib.suppress(grpc.RpcError):
            operations_pb2_grpc.OperationsStub(self._channel).CancelOperation(
                operations_pb2.CancelOperationRequest(name=name), timeout=CONNECT_SECONDS)

    # -- failures ----------------------------------------------------------------------------

    def _check(self) -> None:
        with self._lock:
            if self.failure is not None:
                raise ExecutionFailed(self.failure)

    def _failed(self, code: grpc.StatusCode, details: str | None) -> ExecutionFailed:
        if code == grpc.StatusCode.UNAVAILABLE:
            why = f"it cannot be reached ({_first_line(details)})"
        else:
            why = f"it answered {code.name}: {_first_line(details)}"
        message = f"remote execution on {self.settings.url} failed: {why}"
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED,
                    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
            with self._lock:  # the server is unusable: every later task fails at once
                self.failure = self.failure or message
        return ExecutionFailed(message)

    def _status_failed(self, code: int, message: str) -> ExecutionFailed:
        name = next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))
        return ExecutionFailed(f"remote execution on {self.settings.url} failed: it answered "
                               f"{name}: {_first_line(message)}")


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:300] if lines else "no details"
