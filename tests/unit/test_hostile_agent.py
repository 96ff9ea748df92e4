"""A hostile agent, over real gRPC on a unix socket: the host's receiving code (AgentClient,
receive_events, S2 decoding, the tar reader, extraction) stays bounded whatever it is sent, and
every figure it reports is counted by the host (issue 13, class 3).

A task that took over its agent controls every byte the host reads; the fake agent here
sends what such a task would, lazily, so that an unbounded host would show it in memory or in
the number of entries it stages.
"""

from __future__ import annotations

import io
import tarfile
import tracemalloc
from collections.abc import Iterable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from buildr_podman._protos.buildr.remote.v1 import agent_pb2, agent_pb2_grpc
from buildr_podman.archive.extract import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ENTRIES,
    StagedTree,
    stage_tar_stream,
)
from buildr_podman.errors import BuildrError
from buildr_podman.model import ContainerSpec, Task
from buildr_podman.podman.agent_client import AgentClient, RunSpec
from buildr_podman.podman.task_stream import receive_events
from buildr_podman.s2 import S2Encoder

CHUNK = 256 << 10


class HostileAgent(agent_pb2_grpc.AgentServicer):
    """Answers Hello, and every Run with the tar pieces of `tar`, S2-encoded lazily, then
    `result`."""

    def __init__(self) -> None:
        self.tar: Iterable[bytes] | None = ()  # None: the result alone, no archive
        self.result = agent_pb2.TaskResult()

    def Hello(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        return agent_pb2.HelloResponse()

    def Run(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        if self.tar is None:
            yield agent_pb2.RunEvent(result=self.result)
            return
        encoder = S2Encoder()
        pending = bytearray()
        for piece in self.tar:
            pending += piece
            if len(pending) >= CHUNK:
                yield archive(b"".join(bytes(p) for p in encoder.encode_parts(pending)))
                pending.clear()
            if not context.is_active():
                return
        parts = encoder.encode_parts(pending) + encoder.flush_parts()
        yield archive(b"".join(bytes(p) for p in parts))
        yield agent_pb2.RunEvent(result=self.result)


def archive(data: bytes) -> agent_pb2.RunEvent:
    return agent_pb2.RunEvent(archive=agent_pb2.ArchiveChunk(data=data))


class Observer:
    def output(self, task: Task, stream: str, data: bytes) -> None:
        pass

    def log(self, task: Task, message: str) -> None:
        pass


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[HostileAgent, AgentClient]]:
    socket_path = tmp_path / "agent.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = HostileAgent()
    agent_pb2_grpc.add_AgentServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{socket_path}")
    server.start()
    client = AgentClient(str(socket_path))
    client.wait_ready(10, lambda: True)
    yield servicer, client
    client.close()
    server.stop(grace=None).wait()


def task(**limits: int) -> Task:
    return Task(name="t", module_type="script", container=ContainerSpec(image="unused"),
                script="true", **limits)


class Into:
    """Lands the archive in one directory, whatever the result, through the same staging."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def stage(self, task: Task, archive: object, observer: object = None) -> StagedTree:
        return stage_tar_stream(archive, self.path,  # type: ignore[arg-type]
                                max_bytes=task.max_return_bytes or DEFAULT_MAX_BYTES,
                                max_entries=task.max_return_entries or DEFAULT_MAX_ENTRIES)

    def land(self, task: Task, staged: StagedTree, succeeded: bool,
             observer: object = None) -> Path:
        staged.land(self.path)
        return self.path


def receive(client: AgentClient, out: Path, **limits: int):  # type: ignore[no-untyped-def]
    spec = RunSpec(task_name="t", argv=[], working_dir="", workspace="")
    return receive_events(task(**limits), client.run(spec), Into(out),  # type: ignore[arg-type]
                          Observer())


def header(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0,
           pax: dict[str, str] | None = None) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    if pax is None:
        return info.tobuf(tarfile.USTAR_FORMAT)
    info.pax_headers = pax
    return info.tobuf(tarfile.PAX_FORMAT)


def pax_record(key: bytes, value: bytes) -> bytes:
    """b"LENGTH key=value\\n", LENGTH counting itself."""
    body = b" %s=%s\n" % (key, value)
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return b"%d%s" % (length, body)


def pax_spam(headers: int) -> Iterator[bytes]:
    """Back-to-back pax headers with distinct keys and no member after them: each alone is
    well under the per-record limit, together they are as large as the sender likes."""
    key = 0
    for _ in range(headers):
        records = b""
        while len(records) < 60_000:
            records += pax_record(b"k%d" % key, b"v" * 40)
            key += 1
        info = tarfile.TarInfo("././@PaxHeader")
        info.type, info.size = tarfile.XHDTYPE, len(records)
        yield info.tobuf(tarfile.USTAR_FORMAT)
        yield records + bytes(-len(records) % 512)
    yield header("f")
    yield bytes(1024)


def test_back_to_back_pax_headers_are_refused_with_bounded_memory(hostile, tmp_path) -> None:
    agent, client = hostile
    agent.tar = pax_spam(headers=600)  # ~36 MB of metadata
    tracemalloc.start()
    try:
        with pytest.raises(BuildrError, match="extended headers before one member"):
            receive(client, tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 << 20, f"the host held {peak >> 20} MiB"
    assert not (tmp_path / "out").exists()


def empty_entries(count: int) -> Iterator[bytes]:
    for i in range(count):
        yield header(f"d{i}/" if i % 2 else f"f{i}", tarfile.DIRTYPE if i % 2 else
                     tarfile.REGTYPE)
    yield bytes(1024)


def test_endless_empty_entries_stop_at_the_entry_limit(hostile, tmp_path) -> None:
    agent, client = hostile
    agent.tar = empty_entries(5_000)
    with pytest.raises(BuildrError, match=r"more than 1000 entries \(max_return_entries\)"):
        receive(client, tmp_path / "out", max_return_entries=1000)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "agent.sock"]  # no staging left


def test_empty_entries_count_against_the_size_limit_too(hostile, tmp_path) -> None:
    agent, client = hostile
    agent.tar = empty_entries(5_000)  # 2.5 MB of headers and no content
    with pytest.raises(BuildrError, match=r"beyond the limit of 1000000 bytes"):
        receive(client, tmp_path / "out", max_return_bytes=1_000_000)


def test_the_reported_figures_are_counted_by_the_host(hostile, tmp_path) -> None:
    agent, client = hostile
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
        link = tarfile.TarInfo("l")
        link.type, link.linkname = tarfile.SYMTYPE, "a.txt"
        tar.addfile(link)
        tar.addfile(_directory("d"))
    agent.tar = [data.getvalue()]
    agent.result = agent_pb2.TaskResult(files_returned=1_000_000, bytes_returned=1 << 40)
    outcome = receive(client, tmp_path / "out")
    assert (outcome.files_returned, outcome.bytes_returned) == (2, 5)
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"hello"


def _directory(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def test_a_result_without_an_archive_reports_nothing_returned(hostile, tmp_path) -> None:
    agent, client = hostile
    agent.tar = None
    agent.result = agent_pb2.TaskResult(files_returned=7, bytes_returned=70)
    outcome = receive(client, tmp_path / "out")
    assert (outcome.files_returned, outcome.bytes_returned) == (0, 0)


def test_the_fake_agent_sends_a_good_archive_when_told(hostile, tmp_path) -> None:
    """The control: the same agent and host with an honest archive extract it."""
    agent, client = hostile
    agent.tar = empty_entries(10)
    outcome = receive(client, tmp_path / "out")
    assert outcome.files_returned == 5
    assert sorted(p.name for p in (tmp_path / "out").iterdir())[:3] == ["d1", "d3", "d5"]
