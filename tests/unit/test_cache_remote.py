"""The remote cache client's logic against a small in-process REAPI server whose capabilities
each test chooses (BuildGrid, in tests/integration/test_remote_cache.py, announces only one
set): compression only where announced, ByteStream past the batch limit, SHA-256 or nothing,
every blob verified, and the first failure turning the remote off for the run."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cramjam
import grpc
import pytest

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2_grpc as re_grpc,
)
from buildr_podman._protos.google.bytestream import bytestream_pb2, bytestream_pb2_grpc
from buildr_podman.cache.remote import RemoteCache, RemoteCorrupt, RemoteUnavailable
from buildr_podman.cache.remote_config import RemoteCacheSettings
from buildr_podman.cache.store import Store

ZSTD = re_pb2.Compressor.ZSTD


def digest(data: bytes) -> re_pb2.Digest:
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


@dataclass
class FakeServer:
    """What the server announces, holds and was asked."""

    capabilities: re_pb2.CacheCapabilities
    results: dict[str, re_pb2.ActionResult] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    compressors_asked: list[list[int]] = field(default_factory=list)
    compressors_sent: list[int] = field(default_factory=list)

    # -- Capabilities, ActionCache ------------------------------------------------------------

    def GetCapabilities(self, request: Any, context: Any) -> re_pb2.ServerCapabilities:
        self.calls.append("GetCapabilities")
        return re_pb2.ServerCapabilities(cache_capabilities=self.capabilities)

    def GetActionResult(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.calls.append("GetActionResult")
        if request.action_digest.hash not in self.results:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such action")
        return self.results[request.action_digest.hash]

    def UpdateActionResult(self, request: Any, context: Any) -> Any:
        self.calls.append("UpdateActionResult")
        self.results[request.action_digest.hash] = request.action_result
        return request.action_result

    # -- CAS, ByteStream ----------------------------------------------------------------------

    def FindMissingBlobs(self, request: Any, context: Any) -> Any:
        self.calls.append("FindMissingBlobs")
        return re_pb2.FindMissingBlobsResponse(missing_blob_digests=[
            d for d in request.blob_digests if d.hash not in self.blobs])

    def BatchUpdateBlobs(self, request: Any, context: Any) -> Any:
        self.calls.append("BatchUpdateBlobs")
        for item in request.requests:
            self.compressors_sent.append(item.compressor)
            data = bytes(cramjam.zstd.decompress(item.data)) if item.compressor else item.data
            self.blobs[item.digest.hash] = data
        return re_pb2.BatchUpdateBlobsResponse(responses=[
            re_pb2.BatchUpdateBlobsResponse.Response(digest=r.digest) for r in request.requests])

    def BatchReadBlobs(self, request: Any, context: Any) -> Any:
        self.calls.append("BatchReadBlobs")
        self.compressors_asked.append(list(request.acceptable_compressors))
        compress = ZSTD in request.acceptable_compressors
        answers = []
        for wanted in request.digests:
            data = self.blobs[wanted.hash]
            answers.append(re_pb2.BatchReadBlobsResponse.Response(
                digest=wanted, data=bytes(cramjam.zstd.compress(data)) if compress else data,
                compressor=ZSTD if compress else 0))
        return re_pb2.BatchReadBlobsResponse(responses=answers)

    def Read(self, request: Any, context: Any) -> Iterator[Any]:
        self.calls.append("Read")
        data = self.blobs[request.resource_name.split("/")[-2]]
        for start in range(0, len(data), 1000):
            yield bytestream_pb2.ReadResponse(data=data[start:start + 1000])

    def Write(self, requests: Iterator[Any], context: Any) -> Any:
        self.calls.append("Write")
        name, data = "", b""
        for request in requests:
            name = name or request.resource_name
            data += request.data
        self.blobs[name.split("/")[-2]] = data
        return bytestream_pb2.WriteResponse(committed_size=len(data))


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    servers: list[grpc.Server] = []

    def start(fake: FakeServer) -> RemoteCache:
        server = grpc.server(ThreadPoolExecutor(max_workers=4))
        for add, base in ((re_grpc.add_CapabilitiesServicer_to_server,
                           re_grpc.CapabilitiesServicer),
                          (re_grpc.add_ActionCacheServicer_to_server,
                           re_grpc.ActionCacheServicer),
                          (re_grpc.add_ContentAddressableStorageServicer_to_server,
                           re_grpc.ContentAddressableStorageServicer),
                          (bytestream_pb2_grpc.add_ByteStreamServicer_to_server,
                           bytestream_pb2_grpc.ByteStreamServicer)):
            servicer = type("Servicer", (base,), {
                name: getattr(fake, name) for name in dir(fake) if name[0].isupper()})()
            add(servicer, server)
        socket = f"unix:{tmp_path}/fake-{len(servers)}.sock"
        server.add_insecure_port(socket)
        server.start()
        servers.append(server)
        return RemoteCache(RemoteCacheSettings(socket, socket))

    yield start
    for server in servers:
        server.stop(None)


def entry(store: Store, *blobs: bytes) -> tuple[tuple[str, int], re_pb2.ActionResult]:
    """An action and its successful result naming `blobs`, stored in `store`."""
    files = []
    for n, blob in enumerate(blobs):
        store.put_blob(blob)
        files.append(re_pb2.OutputFile(path=f"out/{n}", digest=digest(blob)))
    action = f"action {blobs[0][:8]!r}".encode()
    return (hashlib.sha256(action).hexdigest(), len(action)), re_pb2.ActionResult(
        exit_code=0, output_files=files)


def capabilities(**kwargs: Any) -> re_pb2.CacheCapabilities:
    return re_pb2.CacheCapabilities(
        digest_functions=[re_pb2.DigestFunction.SHA256], max_batch_total_size_bytes=64 << 10,
        action_cache_update_capabilities=re_pb2.ActionCacheUpdateCapabilities(
            update_enabled=True), **kwargs)


@pytest.mark.parametrize("announced", [[], [ZSTD]])
def test_a_round_trip_compresses_only_what_the_server_announces(
        serve: Any, tmp_path: Path, announced: list[int]) -> None:
    fake = FakeServer(capabilities(supported_compressors=announced,
                                   supported_batch_update_compressors=announced))
    remote = serve(fake)
    small, large = b"small " * 100, bytes(range(256)) * 1024  # 256 KiB: past the batch limit
    uploader = Store(tmp_path / "ci")
    action, result = entry(uploader, small, large)
    remote.upload(action, result, uploader)
    assert fake.calls.count("GetCapabilities") == 1
    assert "Write" in fake.calls and "BatchUpdateBlobs" in fake.calls
    assert fake.compressors_sent == [ZSTD if announced else 0]
    assert fake.results[action[0]] == result

    reader = Store(tmp_path / "developer")
    assert remote.fetch(action, reader)
    assert fake.compressors_asked == [announced]
    assert "Read" in fake.calls
    got = reader.get(action[0])
    assert got is not None
    assert [got.read(f"out/{n}") for n in range(2)] == [small, large]
    got.close()
    assert fake.calls.count("GetCapabilities") == 1  # asked once per run


def test_an_unknown_action_is_a_plain_miss(serve: Any, tmp_path: Path) -> None:
    remote = serve(FakeServer(capabilities()))
    assert not remote.fetch(("0" * 64, 1), Store(tmp_path / "store"))
    assert remote.failure is None


def test_a_blob_that_does_not_match_its_digest_is_never_stored(serve: Any,
                                                               tmp_path: Path) -> None:
    fake = FakeServer(capabilities())
    remote = serve(fake)
    uploader = Store(tmp_path / "ci")
    action, result = entry(uploader, b"the real bytes")
    remote.upload(action, result, uploader)
    fake.blobs[result.output_files[0].digest.hash] = b"the fake bytes"
    reader = Store(tmp_path / "developer")
    with pytest.raises(RemoteCorrupt, match="does not match its digest"):
        remote.fetch(action, reader)
    assert reader.get(action[0]) is None
    assert remote.failure is None  # a damaged entry is not a broken server


def test_a_server_without_sha256_turns_the_remote_off_for_the_run(serve: Any,
                                                                  tmp_path: Path) -> None:
    fake = FakeServer(re_pb2.CacheCapabilities(digest_functions=[re_pb2.DigestFunction.SHA1]))
    remote = serve(fake)
    for _ in range(2):
        with pytest.raises(RemoteUnavailable, match="does not use SHA-256 digests"):
            remote.fetch(("0" * 64, 1), Store(tmp_path / "store"))
    assert fake.calls == ["GetCapabilities"]  # once: then off, without asking again


def test_a_read_only_server_refuses_uploads_in_one_message(serve: Any, tmp_path: Path) -> None:
    fake = FakeServer(re_pb2.CacheCapabilities(max_batch_total_size_bytes=1 << 20))
    remote = serve(fake)
    store = Store(tmp_path / "ci")
    action, result = entry(store, b"bytes")
    with pytest.raises(RemoteUnavailable, match="does not take uploads"):
        remote.upload(action, result, store)
    assert fake.results == {}


def test_a_server_that_is_not_there_fails_at_once(tmp_path: Path) -> None:
    target = f"unix:{tmp_path}/nothing.sock"
    remote = RemoteCache(RemoteCacheSettings(target, target))
    with pytest.raises(RemoteUnavailable, match="cannot be reached"):
        remote.fetch(("0" * 64, 1), Store(tmp_path / "store"))
    assert remote.failure is not None and "cannot be reached" in remote.failure
    remote.close()
