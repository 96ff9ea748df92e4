"""The remote task cache: any REAPI v2 server's ActionCache and CAS (BuildGrid, bazel-remote,
BuildBuddy, ...) serve a local miss and, with `upload = true`, take a success.

A fetch copies the entry into the local store, every blob checked against its digest on
arrival, and the hit is then served from there exactly like a local one: one code path lands
outputs. An upload sends what the local store holds for the key: the missing blobs first,
the ActionResult last, so the server never names a blob it lacks.

The server's GetCapabilities answer, asked once per run, says how: the most bytes one batch
call may carry (larger blobs go through ByteStream, in chunks), the digest function (only
SHA-256 is ours), whether it takes uploads, and its compressors: zstd is used for batch calls
where announced, identity otherwise and for ByteStream.

A server that is down, refuses, or does not answer within DEADLINE costs that much once: the
first failure turns the remote off for the rest of the run (RemoteUnavailable; the caller warns
once), and every task runs or hits locally as if there were no remote.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import cramjam
import grpc

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2_grpc as re_grpc,
)
from buildr_podman._protos.google.bytestream import bytestream_pb2, bytestream_pb2_grpc
from buildr_podman.cache.remote_config import RemoteCacheSettings
from buildr_podman.cache.store import Store

if TYPE_CHECKING:
    from buildr_podman.cache.tree import Digest

__all__ = ["DEADLINE", "RemoteCache", "RemoteCorrupt", "RemoteUnavailable", "blob_digests"]

DEADLINE = 2.0  #: seconds one call may take, plus size / MIN_RATE for a blob transfer
MIN_RATE = 8 << 20  #: bytes per second below which a blob transfer counts as stalled
GRPC_LIMIT = 4 << 20  #: gRPC's default largest message: a batch stays under it
BATCH_OVERHEAD = 256  #: bytes of framing counted per blob of a batch (digest, status)
STREAM_CHUNK = 1 << 20  #: bytes per ByteStream write message
DIGESTS_PER_CALL = 4096  #: digests per FindMissingBlobs call
ZSTD = re_pb2.Compressor.ZSTD
IDENTITY = re_pb2.Compressor.IDENTITY
T = TypeVar("T")


class RemoteUnavailable(Exception):
    """The server is down, refused, was too slow or cannot serve us: the run goes on without
    it. The message says which, for one warning line."""


class RemoteCorrupt(Exception):
    """A blob the server sent does not match its digest: a miss, never a wrong output."""


@dataclass(frozen=True)
class ServerCapabilities:
    max_batch_bytes: int
    read_compressors: frozenset[int]
    update_compressors: frozenset[int]
    update_enabled: bool


class RemoteCache:
    """One run's connection to the remote; thread-safe (tasks look up on worker threads)."""

    def __init__(self, settings: RemoteCacheSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._capabilities: ServerCapabilities | None = None
        self.failure: str | None = None  #: why the remote is off for the rest of this run

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None

    # -- reading -----------------------------------------------------------------------------

    def fetch(self, action: Digest, store: Store) -> bool:
        """Copies the entry of `action` from the server into `store`; False if the server has
        none (or only a failed run's). Raises RemoteUnavailable, RemoteCorrupt."""
        self._server()  # a server we cannot use is not asked
        try:
            result = self._call(re_grpc.ActionCacheStub, "GetActionResult",
                                re_pb2.GetActionResultRequest(
                                    instance_name=self.settings.instance_name,
                                    action_digest=_proto(action),
                                    digest_function=re_pb2.DigestFunction.SHA256))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise self._unavailable(exc) from exc
        if result.exit_code != 0:
            return False  # another client may cache failures; a failure is run again here
        self.fetch_blobs(blob_digests(result), store)
        store.put_result(action[0], result)
        return True

    def fetch_blobs(self, digests: Iterable[re_pb2.Digest], store: Store) -> None:
        """Copies the blobs that `store` lacks from the server's CAS into it, each checked
        against its digest on arrival (batches, ByteStream for large ones). Raises
        RemoteUnavailable, RemoteCorrupt (also for a blob the server does not have)."""
        capabilities = self._server()
        wanted = [d for d in _unique(digests) if not store.has_blob(d.hash)]
        small = [d for d in wanted if d.size_bytes + BATCH_OVERHEAD <= capabilities.max_batch_bytes]
        for batch in _batches(small, capabilities.max_batch_bytes):
            for data in self._batch_read(batch, capabilities):
                store.put_blob(data)
        for digest in wanted:
            if digest.size_bytes + BATCH_OVERHEAD > capabilities.max_batch_bytes:
                store.put_blob_file(self._stream_read(digest, store.temporary_file()))

    def _batch_read(self, digests: list[re_pb2.Digest],
                    capabilities: ServerCapabilities) -> Iterator[bytes]:
        compressors = [ZSTD] if ZSTD in capabilities.read_compressors else []
        request = re_pb2.BatchReadBlobsRequest(
            instance_name=self.settings.instance_name, digests=digests,
            acceptable_compressors=compressors, digest_function=re_pb2.DigestFunction.SHA256)
        response = self._rpc(re_grpc.ContentAddressableStorageStub, "BatchReadBlobs", request,
                             sum(d.size_bytes for d in digests))
        answered = {(r.digest.hash, r.digest.size_bytes): r for r in response.responses}
        for digest in digests:
            found = answered.get((digest.hash, digest.size_bytes))
            if found is None or found.status.code != 0:
                why = found.status.message if found is not None else "not in the answer"
                raise RemoteCorrupt(f"blob {digest.hash[:12]} could not be read ({why})")
            yield _verified(digest, _decompress(found.data, found.compressor, digest))

    def _stream_read(self, digest: re_pb2.Digest, target: Path) -> Path:
        """A blob too large for a batch, through ByteStream into target (identity)."""
        name = "/".join(filter(None, (self.settings.instance_name, "blobs", digest.hash,
                                      str(digest.size_bytes))))
        sha = hashlib.sha256()
        size = 0
        stub = bytestream_pb2_grpc.ByteStreamStub(self._connect())
        responses = stub.Read(bytestream_pb2.ReadRequest(resource_name=name),
                              timeout=_deadline(digest.size_bytes))
        try:
            with open(target, "wb") as sink:
                for chunk in responses:
                    size += len(chunk.data)
                    if size > digest.size_bytes:
                        break  # more than the digest says: corrupt (checked below)
                    sha.update(chunk.data)
                    sink.write(chunk.data)
        except grpc.RpcError as exc:
            target.unlink(missing_ok=True)
            raise self._unavailable(exc) from exc
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        finally:
            responses.cancel()  # a no-op once the stream has ended
        if size != digest.size_bytes or sha.hexdigest() != digest.hash:
            target.unlink(missing_ok=True)
            raise RemoteCorrupt(f"blob {digest.hash[:12]} does not match its digest")
        return target

    # -- writing -----------------------------------------------------------------------------

    def upload(self, action: Digest, result: re_pb2.ActionResult, store: Store) -> None:
        """Stores the entry of `action`, whose blobs are in `store`, on the server: the blobs
        it lacks, then the ActionResult. Raises RemoteUnavailable."""
        if not self._server().update_enabled:
            raise RemoteUnavailable("it does not take uploads (its ActionCache is read-only)")
        self.upload_blobs(blob_digests(result), store)
        self._call(re_grpc.ActionCacheStub, "UpdateActionResult",
                   re_pb2.UpdateActionResultRequest(
                       instance_name=self.settings.instance_name, action_digest=_proto(action),
                       action_result=result, digest_function=re_pb2.DigestFunction.SHA256))

    def upload_blobs(self, digests: Iterable[re_pb2.Digest], store: Store) -> None:
        """Sends the blobs of `store` that the server's CAS lacks (batches, ByteStream for
        large ones). Raises RemoteUnavailable; OSError for a blob gone from `store`."""
        self.upload_files({(d.hash, d.size_bytes): store.blob_path(d.hash) for d in digests})

    def upload_files(self, files: Mapping[Digest, Path]) -> None:
        """Sends the blobs the server's CAS lacks, each read from its file (a remote
        execution's inputs are in the repository, not in the store). Raises
        RemoteUnavailable (the server checks each blob against its digest); OSError."""
        capabilities = self._server()
        missing = self._find_missing([_proto(digest) for digest in files])
        limit = capabilities.max_batch_bytes
        small = [d for d in missing if d.size_bytes + BATCH_OVERHEAD <= limit]
        for batch in _batches(small, limit):
            self._batch_update(batch, files, capabilities)
        for digest in missing:
            if digest.size_bytes + BATCH_OVERHEAD > limit:
                self._stream_write(digest, files[digest.hash, digest.size_bytes])

    def _find_missing(self, digests: list[re_pb2.Digest]) -> list[re_pb2.Digest]:
        missing: list[re_pb2.Digest] = []
        for start in range(0, len(digests), DIGESTS_PER_CALL):
            response = self._call(re_grpc.ContentAddressableStorageStub, "FindMissingBlobs",
                                  re_pb2.FindMissingBlobsRequest(
                                      instance_name=self.settings.instance_name,
                                      blob_digests=digests[start:start + DIGESTS_PER_CALL],
                                      digest_function=re_pb2.DigestFunction.SHA256))
            missing.extend(response.missing_blob_digests)
        return missing

    def _batch_update(self, digests: list[re_pb2.Digest], files: Mapping[Digest, Path],
                      capabilities: ServerCapabilities) -> None:
        compress = ZSTD in capabilities.update_compressors
        requests = []
        for digest in digests:
            data = files[digest.hash, digest.size_bytes].read_bytes()
            requests.append(re_pb2.BatchUpdateBlobsRequest.Request(
                digest=digest, data=bytes(cramjam.zstd.compress(data)) if compress else data,
                compressor=ZSTD if compress else IDENTITY))
        response = self._rpc(re_grpc.ContentAddressableStorageStub, "BatchUpdateBlobs",
                             re_pb2.BatchUpdateBlobsRequest(
                                 instance_name=self.settings.instance_name, requests=requests,
                                 digest_function=re_pb2.DigestFunction.SHA256),
                             sum(d.size_bytes for d in digests))
        for answer in response.responses:
            if answer.status.code != 0:
                raise RemoteUnavailable(f"it refused blob {answer.digest.hash[:12]} "
                                        f"({answer.status.message or answer.status.code})")

    def _stream_write(self, digest: re_pb2.Digest, path: Path) -> None:
        name = "/".join(filter(None, (self.settings.instance_name, "uploads", str(uuid.uuid4()),
                                      "blobs", digest.hash, str(digest.size_bytes))))

        def chunks() -> Iterator[bytestream_pb2.WriteRequest]:
            with open(path, "rb") as source:
                offset = 0
                while True:
                    data = source.read(STREAM_CHUNK)
                    last = offset + len(data) >= digest.size_bytes or not data
                    yield bytestream_pb2.WriteRequest(resource_name=name if offset == 0 else "",
                                                      write_offset=offset, finish_write=last,
                                                      data=data)
                    offset += len(data)
                    if last:
                        return

        try:
            stub = bytestream_pb2_grpc.ByteStreamStub(self._connect())
            response = stub.Write(chunks(), timeout=_deadline(digest.size_bytes))
        except grpc.RpcError as exc:
            raise self._unavailable(exc) from exc
        if response.committed_size not in (digest.size_bytes, -1):
            raise RemoteUnavailable(f"it kept {response.committed_size} of the "
                                    f"{digest.size_bytes} bytes of blob {digest.hash[:12]}")

    # -- the connection ----------------------------------------------------------------------

    def _server(self) -> ServerCapabilities:
        """What the server can do, asked once per run; raises RemoteUnavailable (again, at no
        cost, once it has failed)."""
        with self._lock:
            if self.failure is not None:
                raise RemoteUnavailable(self.failure)
            if self._capabilities is not None:
                return self._capabilities
        answer = self._call(re_grpc.CapabilitiesStub, "GetCapabilities",
                            re_pb2.GetCapabilitiesRequest(
                                instance_name=self.settings.instance_name))
        try:
            capabilities = _read_capabilities(answer.cache_capabilities)
        except RemoteUnavailable as exc:
            raise self.turn_off(str(exc)) from exc
        with self._lock:
            self._capabilities = capabilities
        return capabilities

    def _connect(self) -> grpc.Channel:
        with self._lock:
            if self.failure is not None:
                raise RemoteUnavailable(self.failure)
            if self._channel is None:
                self._channel = grpc.insecure_channel(self.settings.target, options=[
                    ("grpc.max_receive_message_length", 2 * GRPC_LIMIT),
                    ("grpc.max_send_message_length", 2 * GRPC_LIMIT),
                    ("grpc.enable_retries", 0)])
            return self._channel

    def _call(self, stub: Callable[[grpc.Channel], Any], method: str, request: Any) -> Any:
        """A small call within DEADLINE; a failure other than NOT_FOUND turns the remote off."""
        return self._rpc(stub, method, request, 0)

    def _rpc(self, stub: Callable[[grpc.Channel], Any], method: str, request: Any,
             size: int) -> Any:
        try:
            return getattr(stub(self._connect()), method)(request, timeout=_deadline(size))
        except grpc.RpcError as exc:
            if method == "GetActionResult" and exc.code() == grpc.StatusCode.NOT_FOUND:
                raise
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: grpc.RpcError) -> RemoteUnavailable:
        code = exc.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            why = f"it did not answer within {DEADLINE:g} s"
        elif code == grpc.StatusCode.UNAVAILABLE:
            why = f"it cannot be reached ({_first_line(exc.details())})"
        else:
            why = f"it answered {code.name}: {_first_line(exc.details())}"
        return self.turn_off(why)

    def turn_off(self, why: str) -> RemoteUnavailable:
        """Records that the remote is off for the rest of the run; the exception to raise."""
        with self._lock:
            self.failure = self.failure or why
            return RemoteUnavailable(self.failure)


def _read_capabilities(cache: re_pb2.CacheCapabilities) -> ServerCapabilities:
    functions = set(cache.digest_functions)
    if functions and re_pb2.DigestFunction.SHA256 not in functions:
        names = ", ".join(re_pb2.DigestFunction.Value.Name(f) for f in sorted(functions))
        raise RemoteUnavailable(f"it does not use SHA-256 digests (only {names})")
    announced = cache.max_batch_total_size_bytes  # 0: no limit but gRPC's own
    limit = min(announced, GRPC_LIMIT) if announced > 0 else GRPC_LIMIT
    return ServerCapabilities(
        max_batch_bytes=limit, read_compressors=frozenset(cache.supported_compressors),
        update_compressors=frozenset(cache.supported_batch_update_compressors),
        update_enabled=cache.action_cache_update_capabilities.update_enabled)


def blob_digests(result: re_pb2.ActionResult) -> list[re_pb2.Digest]:
    """Every blob an ActionResult names (its output files, stdout and stderr)."""
    found = [output.digest for output in result.output_files]
    found += [d for d in (result.stdout_digest, result.stderr_digest) if d.hash]
    return _unique(found)


def _unique(digests: Iterable[re_pb2.Digest]) -> list[re_pb2.Digest]:
    seen: dict[tuple[str, int], re_pb2.Digest] = {}
    for digest in digests:
        seen.setdefault((digest.hash, digest.size_bytes), digest)
    return list(seen.values())


def _batches(digests: list[re_pb2.Digest], limit: int) -> Iterator[list[re_pb2.Digest]]:
    """Runs of digests whose blobs (with framing) fit one batch call of `limit` bytes."""
    batch: list[re_pb2.Digest] = []
    used = 0
    for digest in digests:
        cost = digest.size_bytes + BATCH_OVERHEAD
        if batch and used + cost > limit:
            yield batch
            batch, used = [], 0
        batch.append(digest)
        used += cost
    if batch:
        yield batch


def _decompress(data: bytes, compressor: int, digest: re_pb2.Digest) -> bytes:
    if compressor == IDENTITY:
        return data
    if compressor != ZSTD:
        raise RemoteCorrupt(f"blob {digest.hash[:12]} came with compressor {compressor}, "
                            "which was not asked for")
    buffer = bytearray(digest.size_bytes + 1)  # bounded: a zstd bomb cannot grow past it
    try:
        size = cramjam.zstd.decompress_into(data, buffer)
    except cramjam.DecompressionError as exc:
        raise RemoteCorrupt(f"blob {digest.hash[:12]} cannot be decompressed ({exc})") from exc
    return bytes(buffer[:size])


def _verified(digest: re_pb2.Digest, data: bytes) -> bytes:
    if len(data) != digest.size_bytes or hashlib.sha256(data).hexdigest() != digest.hash:
        raise RemoteCorrupt(f"blob {digest.hash[:12]} does not match its digest")
    return data


def _deadline(size: int) -> float:
    return DEADLINE + size / MIN_RATE


def _proto(digest: Digest) -> re_pb2.Digest:
    return re_pb2.Digest(hash=digest[0], size_bytes=digest[1])


def _first_line(text: str | None) -> str:
    return (text or "no details").strip().splitlines()[0][:200] if text else "no details"
