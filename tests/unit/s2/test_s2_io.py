"""S2Reader and S2Writer as file objects: sources, sinks, tarfile, and bounded memory."""

from __future__ import annotations

import io
import os
import tarfile
import tracemalloc

import pytest

from buildr_podman.s2 import MAX_BLOCK_SIZE, S2Reader, S2Writer, compress, decompress
from buildr_podman.s2._format import STREAM_IDENTIFIER, masked_crc


class Sink(io.BytesIO):
    """Records flushes, and returns short counts so that partial writes are retried."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return super().write(bytes(data)[:5000])

    def flush(self) -> None:
        self.flushes += 1


class PlainSource:
    """Only read(n), no read1: the reader must never ask past the chunk it is reading,
    or a blocking pipe whose writer waits for an answer would hang."""

    def __init__(self, stream: bytes) -> None:
        self.stream = stream
        self.pos = 0
        self.asked = 0

    def read(self, n: int) -> bytes:
        self.asked += n
        assert self.asked <= len(self.stream) + 4
        data = self.stream[self.pos:self.pos + n]
        self.pos += len(data)
        return data


def test_writer_retries_short_writes_and_flushes() -> None:
    sink = Sink()
    data = os.urandom(30000)
    with S2Writer(sink, block_size=4096) as writer:
        writer.write(data[:100])
        writer.flush()  # emits the partial block
        assert decompress(sink.getvalue()) == data[:100]
        writer.write(data[100:])
    assert decompress(sink.getvalue()) == data
    assert sink.flushes >= 2
    assert not sink.closed


def test_writer_closes_the_sink_only_when_asked() -> None:
    sink = io.BytesIO()
    S2Writer(sink).close()
    assert not sink.closed
    writer = S2Writer(sink, closefd=True)
    writer.write(b"x")
    writer.close()
    assert sink.closed
    with pytest.raises(ValueError):
        writer.write(b"more")


def test_empty_writer_still_writes_the_identifier() -> None:
    sink = io.BytesIO()
    with S2Writer(sink):
        pass
    assert sink.getvalue() == STREAM_IDENTIFIER


def test_reader_readinto_and_small_reads() -> None:
    data = os.urandom(10000) * 3
    reader = S2Reader(io.BytesIO(compress(data, 4096)))
    buf = bytearray(1000)
    assert reader.readinto(buf) == 1000 and buf == data[:1000]
    assert reader.read(0) == b""
    assert reader.read(10) == data[1000:1010]
    assert reader.readall() == data[1010:]
    assert reader.read(10) == b""
    assert reader.readinto(buf) == 0


def test_reader_asks_a_plain_source_only_for_what_it_needs() -> None:
    data = b"line of text\n" * 50000
    source = PlainSource(compress(data, 65536) + compress(b"tail", compress=False))
    assert S2Reader(source).read() == data + b"tail"


def test_reader_under_a_buffered_reader_and_textio() -> None:
    data = "".join(f"line {i}\n" for i in range(20000)).encode()
    raw = S2Reader(io.BytesIO(compress(data, 4096)), closefd=True)
    with io.TextIOWrapper(io.BufferedReader(raw), encoding="ascii") as text:
        lines = text.readlines()
    assert len(lines) == 20000 and lines[-1] == "line 19999\n"
    assert raw.closed


def test_reader_from_non_blocking_source_returns_none_when_dry() -> None:
    stream = compress(b"abc")

    class Dry:
        def __init__(self) -> None:
            self.replies: list[bytes | None] = [stream[:5], None, stream[5:], b""]

        def read1(self, n: int) -> bytes | None:
            return self.replies.pop(0)

        read = read1

    reader = S2Reader(Dry())
    buf = bytearray(10)
    assert reader.readinto(buf) is None
    assert reader.readinto(buf) == 3 and buf[:3] == b"abc"
    assert reader.readinto(buf) == 0


def test_reader_ignores_empty_messages_from_an_iterable() -> None:
    stream = compress(b"payload")
    assert S2Reader([b"", stream[:3], b"", bytearray(stream[3:]), b""]).read() == b"payload"


def test_reader_takes_a_whole_stream_as_bytes() -> None:
    assert S2Reader(compress(b"in memory")).read() == b"in memory"
    with pytest.raises(TypeError):
        S2Reader([compress(b"x"), 42]).read()


def test_tarfile_stream_through_writer_and_reader(tmp_path: object) -> None:
    files = {f"src/mod{i}.py": (f"x = {i}\n" * (i + 1)).encode() for i in range(50)}
    sink = io.BytesIO()
    with S2Writer(sink, block_size=8192) as writer, tarfile.open(fileobj=writer, mode="w|") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    got = {}
    with (S2Reader(io.BytesIO(sink.getvalue())) as reader,
          tarfile.open(fileobj=reader, mode="r|") as tar):
        for member in tar:
            extracted = tar.extractfile(member)
            assert extracted is not None
            got[member.name] = extracted.read()
    assert got == files


def bomb(blocks: int) -> bytes:
    """Each chunk is 20 bytes that decode to 4 MiB of zeros (literal, copy, long repeat)."""
    size = MAX_BLOCK_SIZE
    varint = bytes([size & 0x7F | 0x80, size >> 7 & 0x7F | 0x80, size >> 14 & 0x7F | 0x80,
                    size >> 21])
    rest = size - 5 - 65540
    block = varint + b"\x00\x00" + b"\x01\x01" + b"\x1d\x00" + rest.to_bytes(3, "little")
    crc = masked_crc(bytes(size)).to_bytes(4, "little")
    data_chunk = b"\x00" + (len(block) + 4).to_bytes(3, "little") + crc + block
    return STREAM_IDENTIFIER + data_chunk * blocks


def test_memory_stays_bounded_by_the_block_size() -> None:
    stream = bomb(24)  # 96 MiB out of 490 bytes in
    tracemalloc.start()
    try:
        total = 0
        with S2Reader(io.BytesIO(stream)) as reader:
            while chunk := reader.read(1 << 20):
                total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 24 * MAX_BLOCK_SIZE
    assert peak < 2 * MAX_BLOCK_SIZE  # one block, plus what the caller holds


def test_read_view_returns_what_read_would_without_a_copy() -> None:
    data = os.urandom(3 * 50_000 + 17)  # pieces below 16 KiB are gathered (copied) by design
    stream = compress(data, block_size=50_000, compress=False)
    by_read, by_view = S2Reader(iter([stream])), S2Reader(iter([stream]))
    views = []
    while view := by_view.read_view(30_000):
        assert view.readonly
        views.append(view)
        assert bytes(view) == by_read.read(30_000)
    assert by_read.read(30_000) == b""
    assert b"".join(views) == data  # every view still holds its bytes at the end
    # Stored blocks arrive whole in one message: the views are of that message itself.
    assert all(view.obj is stream for view in views)
