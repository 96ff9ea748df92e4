"""The packer: the changed paths as S2-compressed tar, in messages of whole S2 chunks."""

from __future__ import annotations

import os
import queue
import random
import threading
from pathlib import Path

import pytest

from buildr_podman._protos.archive_wire import archive_event_prefix
from buildr_podman._protos.buildr.remote.v1 import agent_pb2
from buildr_podman.agent import packer
from buildr_podman.agent.access import ACCESS
from buildr_podman.agent.packer import (
    CHUNK_SIZE,
    QUEUE_DEPTH,
    PackStats,
    pack_changes,
    pack_entries,
)
from buildr_podman.archive.extract import extract_tar_stream
from buildr_podman.s2 import S2Reader, decompress


def s2_chunk_lengths(message: bytes | memoryview) -> list[int]:
    """The lengths of the S2 chunks a message holds; fails unless it holds whole chunks."""
    lengths, position = [], 0
    while position < len(message):
        length = int.from_bytes(message[position + 1:position + 4], "little")
        lengths.append(length)
        position += 4 + length
    assert position == len(message), "an S2 chunk is split between two messages"
    return lengths


def drain(messages: queue.Queue[bytes | BaseException | None]) -> list[bytes]:
    got = []
    while not messages.empty():
        message = messages.get()
        assert isinstance(message, bytes)
        got.append(message)
    return got


@pytest.mark.parametrize("compress", [True, False])
def test_messages_hold_whole_s2_chunks_whatever_the_writes(
        monkeypatch: pytest.MonkeyPatch, compress: bool) -> None:
    monkeypatch.setattr(packer, "CHUNK_SIZE", 1000)
    messages: queue.Queue[bytes | BaseException | None] = queue.Queue()
    writer = packer._MessageQueueWriter(messages, compress)
    rng = random.Random(3)
    written = []
    for size in [0, 1, 999, 1000, 1001, 3500, 7, 2000, 10] + [rng.randrange(3000) for _ in range(50)]:
        data = rng.randbytes(size // 2) * 2  # half of it repeats: compressible
        written.append(data)
        assert writer.write(memoryview(data) if size % 2 else bytearray(data)) == len(data)
    writer.finish()
    got = drain(messages)
    assert len(got) > 10
    for message in got:
        s2_chunk_lengths(message)
    assert decompress(b"".join(got)) == b"".join(written)


@pytest.mark.parametrize("compress", [True, False])
def test_a_writes_bytes_are_in_messages_before_it_returns(
        monkeypatch: pytest.MonkeyPatch, compress: bool) -> None:
    # The tar writer reads each block of a big file into the same buffer: whatever a write
    # was given must be copied into its messages by the time write() returns.
    monkeypatch.setattr(packer, "CHUNK_SIZE", 10)
    messages: queue.Queue[bytes | BaseException | None] = queue.Queue()
    writer = packer._MessageQueueWriter(messages, compress, archive_event_prefix)
    block = bytearray(30)
    for fill in b"abc":
        block[:] = bytes([fill]) * 30
        writer.write(block)
    block[:] = bytes(30)
    writer.finish()
    got = [agent_pb2.RunEvent.FromString(message).archive.data for message in drain(messages)]
    assert len(got) == 9  # three chunks a write, one a message
    assert decompress(b"".join(got)) == b"a" * 30 + b"b" * 30 + b"c" * 30


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
    messages = list(pack_changes(str(src), rels, stats, compress=compress,
                                 message_prefix=archive_event_prefix))
    chunks = [agent_pb2.RunEvent.FromString(message).archive.data for message in messages]
    assert len(chunks) > 3  # 3 MiB of one file alone is three blocks and messages
    for chunk in chunks:
        s2_chunk_lengths(chunk)
    extract_tar_stream(S2Reader(iter(chunks)), tmp_path / "out")
    assert (stats.files, stats.bytes) == (62, sum(index * 997 for index in range(60)) + (3 << 20))
    for rel in rels[:-1]:
        copy, original = (tmp_path / "out" / rel).lstat(), (src / rel).lstat()
        assert (copy.st_mode, copy.st_size, copy.st_mtime_ns) == (
            original.st_mode, original.st_size, original.st_mtime_ns)
        if not os.path.islink(src / rel):
            assert (tmp_path / "out" / rel).read_bytes() == (src / rel).read_bytes()


def test_closing_the_messages_early_stops_the_packing_thread(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(os.urandom(12 << 20))  # more messages than the queue holds
    taken = []

    def entries():
        for name in ["big", "after"]:
            taken.append(name)
            yield str(tmp_path / name), name

    messages = pack_entries(entries(), PackStats(), compress=False)
    next(messages)
    messages.close()  # the host went away: the thread must stop, mid-file, and let go
    assert taken == ["big"]
    assert not [t for t in threading.enumerate() if t.name == "packer"]


def test_entries_are_taken_while_earlier_ones_are_sent(tmp_path: Path) -> None:
    # A ChangeResolution finds paths while the first are packed: the packer must not list
    # its entries before it starts. Each file is bigger than all the packing thread may write
    # ahead (the queue, the message it is filling, the one just taken), so however late this
    # thread is scheduled, the third path cannot have been taken by the first message.
    file_size = (QUEUE_DEPTH + 3) * CHUNK_SIZE
    for index in range(3):
        (tmp_path / f"f{index}").write_bytes(os.urandom(file_size))
    taken = []

    def paths():
        for index in range(3):
            taken.append(index)
            yield f"f{index}"

    messages = pack_changes(str(tmp_path), paths(), PackStats(), compress=False)
    next(messages)
    assert taken[0] == 0 and len(taken) < 3
    assert sum(1 for _ in messages) >= 8
    assert taken == [0, 1, 2]


def make_sparse(path: Path, size: int, data: dict[int, bytes]) -> None:
    with open(path, "wb") as sparse:
        sparse.truncate(size)
        for offset, chunk in data.items():
            sparse.seek(offset)
            sparse.write(chunk)


@pytest.mark.parametrize("compress", [True, False])
def test_sparse_files_stay_sparse_and_count_what_they_store(tmp_path: Path,
                                                            compress: bool) -> None:
    """4 GiB of nothing is a 512-byte map in the archive and a hole on the host; data between
    holes comes back where it was (also past S2 blocks and messages)."""
    src = tmp_path / "src"
    src.mkdir()
    make_sparse(src / "empty", 4 << 30, {})
    middle = os.urandom(3 << 20)
    make_sparse(src / "holes", 1 << 30, {0: b"head", 100 << 20: middle, (1 << 30) - 4: b"tail"})
    if os.stat(src / "empty").st_blocks:
        pytest.skip("this file system keeps no holes")
    (src / "dense").write_bytes(b"\0" * 8192)  # zeros written out: stored as they are
    stats = PackStats()
    messages = list(pack_changes(str(src), ["empty", "holes", "dense"], stats,
                                 compress=compress))
    assert sum(len(m) for m in messages) < (4 << 20) + 8192 + 64 * 1024
    holes_stored = 512 + (4 << 10) + len(middle) + 4096  # map, head and tail blocks, middle
    assert stats.bytes == 512 + holes_stored + 8192
    extract_tar_stream(S2Reader(iter(messages)), tmp_path / "out", max_bytes=16 << 20)
    out = tmp_path / "out"
    assert (out / "empty").stat().st_size == 4 << 30 and (out / "empty").stat().st_blocks == 0
    holes = out / "holes"
    assert holes.stat().st_size == 1 << 30
    assert holes.stat().st_blocks * 512 < 8 << 20, "the holes came back as holes"
    with open(holes, "rb") as back:
        assert back.read(4) == b"head"
        back.seek(100 << 20)
        assert back.read(len(middle)) == middle
        back.seek((1 << 30) - 4)
        assert back.read() == b"tail"
    assert (out / "dense").read_bytes() == b"\0" * 8192


def test_a_regular_file_is_looked_up_once_and_other_kinds_as_before(tmp_path: Path,
                                                                    monkeypatch) -> None:
    # A regular file is opened and fstat'ed: one lookup of its path, which through the
    # container's overlay is most of a small file's cost, instead of an lstat and then an
    # open. Anything else is looked at with lstat as before; a FIFO is not waited on
    # (O_NONBLOCK) and never packed; a file closed to its owner is opened up and packed.
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "file").write_bytes(b"data")
    os.symlink("dir/file", src / "link")
    os.mkfifo(src / "fifo")
    (src / "closed").write_bytes(b"secret")
    os.chmod(src / "closed", 0)
    looked: list[str] = []
    real_lstat = ACCESS.lstat
    monkeypatch.setattr(ACCESS, "lstat",
                        lambda path: looked.append(os.path.basename(path)) or real_lstat(path))
    stats = PackStats()
    chunks = list(pack_changes(str(src), ["closed", "dir", "dir/file", "fifo", "link"], stats))
    extract_tar_stream(S2Reader(iter(chunks)), tmp_path / "out")
    unreadable = ["closed"] if os.geteuid() != 0 else []  # root reads it: no lstat then
    assert sorted(looked) == sorted(["dir", "fifo", "link", *unreadable])
    assert (stats.files, stats.bytes) == (3, len(b"data") + len(b"secret"))
    out = tmp_path / "out"
    assert (out / "dir" / "file").read_bytes() == b"data"
    assert os.readlink(out / "link") == "dir/file"
    assert not (out / "fifo").exists()
    assert (out / "closed").stat().st_size == len(b"secret")
    assert (src / "closed").stat().st_mode & 0o777 == 0  # its mode put back
