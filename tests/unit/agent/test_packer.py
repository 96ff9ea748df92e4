"""The packer: the changed paths as S2-compressed tar, in chunks of a fixed size."""

from __future__ import annotations

import os
import queue
import random
from pathlib import Path

import pytest

from buildr_podman.agent import packer
from buildr_podman.agent.packer import PackStats, pack_changes
from buildr_podman.archive.extract import extract_tar_stream
from buildr_podman.s2 import S2Reader


def test_the_chunk_writer_cuts_any_writes_into_equal_chunks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packer, "CHUNK_SIZE", 1000)
    chunks: queue.Queue[memoryview | BaseException | None] = queue.Queue()
    writer = packer._ChunkQueueWriter(chunks)
    rng = random.Random(3)
    written = []
    for size in [0, 1, 999, 1000, 1001, 3500, 7, 2000, 10] + [rng.randrange(3000) for _ in range(50)]:
        data = rng.randbytes(size)
        written.append(data)
        assert writer.write(memoryview(data) if size % 2 else bytearray(data)) == size
    writer.flush()
    got = []
    while not chunks.empty():
        chunk = chunks.get()
        assert isinstance(chunk, memoryview)
        got.append(bytes(chunk))
        writer.recycle(chunk)
    assert all(len(chunk) == 1000 for chunk in got[:-1]) and 0 < len(got[-1]) <= 1000
    assert b"".join(got) == b"".join(written)


def test_the_chunk_writer_reuses_the_buffers_given_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packer, "CHUNK_SIZE", 10)
    chunks: queue.Queue[memoryview | BaseException | None] = queue.Queue()
    writer = packer._ChunkQueueWriter(chunks)
    writer.write(b"a" * 10)
    first = chunks.get()
    assert isinstance(first, memoryview) and bytes(first) == b"a" * 10
    buffer = first.obj
    writer.recycle(first)
    writer.write(b"b" * 20)  # the chunk being filled, then the recycled buffer
    second, third = chunks.get(), chunks.get()
    assert isinstance(third, memoryview) and third.obj is buffer
    assert isinstance(second, memoryview) and bytes(second) + bytes(third) == b"b" * 20


@pytest.mark.parametrize("compress", [True, False])
def test_packed_changes_extract_to_the_same_files(tmp_path: Path, compress: bool) -> None:
    src = tmp_path / "src"
    rels = []
    for index in range(60):
        path = src / f"d{index % 7}" / f"f{index}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(index * 997))
        os.utime(path, ns=(1_764_300_000_123_456_789 + index,) * 2)
        rels.append(str(path.relative_to(src)))
    (src / "big").write_bytes(os.urandom(3 << 20))  # more than one S2 block and chunk
    os.symlink("big", src / "link")
    rels += ["big", "link", "missing"]  # deleted after tracking: skipped
    stats = PackStats()
    chunks = list(pack_changes(str(src), rels, stats, compress=compress))
    assert all(len(chunk) == packer.CHUNK_SIZE for chunk in chunks[:-1])
    extract_tar_stream(S2Reader(iter(chunks)), tmp_path / "out")
    assert (stats.files, stats.bytes) == (62, sum(index * 997 for index in range(60)) + (3 << 20))
    for rel in rels[:-1]:
        copy, original = (tmp_path / "out" / rel).lstat(), (src / rel).lstat()
        assert (copy.st_mode, copy.st_size, copy.st_mtime_ns) == (
            original.st_mode, original.st_size, original.st_mtime_ns)
        if not os.path.islink(src / rel):
            assert (tmp_path / "out" / rel).read_bytes() == (src / rel).read_bytes()
