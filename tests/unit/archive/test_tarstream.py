"""The lean tar reader and the agent's tar writer: interchangeable with `tarfile`."""

from __future__ import annotations

import io
import itertools
import os
import random
import shutil
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from buildr_podman.agent.tarwriter import FLUSH_SIZE, TarWriter
from buildr_podman.archive.extract import extract_tar_stream
from buildr_podman.archive.tarstream import BLOCK, Member, TarReader, _header_sum
from buildr_podman.errors import ArchiveError


def make_tree(root: Path) -> None:
    deep = root / ("long-directory-name-" * 6) / "more"
    deep.mkdir(parents=True)
    (deep / ("file-" * 30 + ".txt")).write_bytes(b"long name\n")
    (root / "small.bin").write_bytes(os.urandom(1000))
    (root / "empty").write_bytes(b"")
    (root / "emptydir").mkdir()
    os.symlink("x" * 150, root / "longlink")
    os.chmod(root / "small.bin", 0o750)
    os.utime(root / "small.bin", ns=(1_700_000_000_123_456_789,) * 2)


def write_with_ours(root: Path) -> bytes:
    sink = io.BytesIO()
    writer = TarWriter(sink)
    for path in sorted(root.rglob("*")):
        writer.add(str(path), str(path.relative_to(root)), path.lstat())
    writer.close()
    return sink.getvalue()


def test_tarfile_reads_what_the_agent_writes(tmp_path: Path) -> None:
    make_tree(tmp_path)
    data = write_with_ours(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for path in tmp_path.rglob("*"):
            rel = str(path.relative_to(tmp_path))
            member = members[rel]
            assert member.uid == member.gid == 0 and member.uname == ""
            if path.is_symlink():
                assert member.issym() and member.linkname == os.readlink(path)
            elif path.is_dir():
                assert member.isdir()
            else:
                assert tar.extractfile(member).read() == path.read_bytes()
                assert member.mode == path.stat().st_mode & 0o7777
        assert members["small.bin"].mtime == pytest.approx(1_700_000_000.123456789)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_our_reader_reads_what_tarfile_writes(tmp_path: Path, fmt: int) -> None:
    make_tree(tmp_path)
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w", format=fmt) as tar:
        for path in sorted(tmp_path.rglob("*")):
            rel = str(path.relative_to(tmp_path))
            if fmt == tarfile.USTAR_FORMAT and (len(path.name) > 100 or path.is_symlink()):
                continue  # ustar cannot hold these
            tar.add(path, arcname=rel, recursive=False)
    reader = TarReader(io.BytesIO(sink.getvalue()))
    seen = {}
    for member in reader:
        body = b""
        while chunk := reader.read_body(300):
            body += chunk
        seen[member.name.rstrip("/")] = (member, body)
    for rel, (member, body) in seen.items():
        path = tmp_path / rel
        if member.isreg():
            assert body == path.read_bytes()
        elif member.issym():
            assert member.linkname == os.readlink(path)
    assert "small.bin" in seen and "emptydir" in seen


def test_a_bad_checksum_is_refused() -> None:
    data = bytearray(tarfile_bytes())
    data[0] ^= 1  # change the name: the checksum no longer matches
    with pytest.raises(ArchiveError, match="checksum"):
        list(TarReader(io.BytesIO(bytes(data))))


def test_a_truncated_archive_is_refused() -> None:
    data = tarfile_bytes()
    with pytest.raises(ArchiveError, match="ends"):
        list(TarReader(io.BytesIO(data[:512])))


def test_a_huge_extended_header_is_refused() -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 1 << 30
    header = info.tobuf(tarfile.USTAR_FORMAT)
    with pytest.raises(ArchiveError, match="extended header"):
        list(TarReader(io.BytesIO(header)))


def tarfile_bytes(pax: dict[str, str] | None = None) -> bytes:
    """One file, "a.txt", by tarfile; with pax records when given."""
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 3
        info.pax_headers = pax or {}
        tar.addfile(info, io.BytesIO(b"abc"))
    return sink.getvalue()


# --- exact times -------------------------------------------------------------------------

NS_MTIME = 1_764_300_000_123_456_789  # a float holds it to ~100 ns only


def test_nanosecond_mtimes_are_extracted_exactly(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "file").write_bytes(b"content")
    os.symlink("file", src / "dir" / "link")
    rels = ["dir/file", "dir/link", "dir"]
    for offset, rel in enumerate(rels):
        os.utime(src / rel, ns=(NS_MTIME + offset,) * 2, follow_symlinks=False)
    extract_tar_stream(io.BytesIO(write_with_ours(src)), tmp_path / "out")
    for offset, rel in enumerate(rels):
        assert (tmp_path / "out" / rel).lstat().st_mtime_ns == NS_MTIME + offset


@pytest.mark.parametrize("mtime_ns", [
    0, 1, 999_999_999, 1_000_000_000, NS_MTIME, -1, -1_500_000_000, -2_000_000_000,
    (8**11 - 1) * 1_000_000_000, 8**11 * 1_000_000_000, 8**11 * 1_000_000_000 + 1])
def test_every_mtime_makes_the_round_trip(tmp_path: Path, mtime_ns: int) -> None:
    """Nanoseconds, times before 1970 and past the octal field go in a pax record."""
    path = tmp_path / "f"
    path.write_bytes(b"x")
    data = write_members(("f", path, with_mtime(path, mtime_ns)))
    [member] = TarReader(io.BytesIO(data))
    assert member.mtime_ns == mtime_ns
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getmember("f").mtime == pytest.approx(mtime_ns / 1e9)


@pytest.mark.parametrize(("text", "ns"), [
    ("1764300000.123456789", NS_MTIME),
    ("1764300000.5", 1_764_300_000_500_000_000),
    ("7", 7_000_000_000),
    ("7.", 7_000_000_000),
    ("-1.5", -1_500_000_000),
    ("1.1234567899", 1_123_456_789),  # past nanoseconds: dropped
    ("10413792000.123456789", 10_413_792_000_123_456_789),  # 2300: past 64-bit nanoseconds
    ("9223372036854775807.999999999", ((1 << 63) - 1) * 10**9 + 999_999_999),  # time_t's last
])
def test_pax_mtimes_are_read_as_exact_nanoseconds(text: str, ns: int) -> None:
    [member] = TarReader(io.BytesIO(tarfile_bytes(pax={"mtime": text})))
    assert member.mtime_ns == ns


@pytest.mark.parametrize("text", ["1e9", "nan", "inf", "", ".5", "1.2.3", "0x10", "+7", "1_0",
                                  "\u0663", "9" * 30, "9223372036854775808"])
def test_a_bad_pax_mtime_is_refused(text: str) -> None:
    with pytest.raises(ArchiveError, match="bad pax size or mtime"):
        list(TarReader(io.BytesIO(tarfile_bytes(pax={"mtime": text}))))


# --- header fields -----------------------------------------------------------------------

def test_the_header_checksum_is_the_sum_of_its_bytes() -> None:
    rng = random.Random(7)
    blocks = [bytes([255]) * 512, bytes(512)] + [rng.randbytes(512) for _ in range(2000)]
    for block in blocks:
        assert _header_sum(block) == sum(block[:148]) + 8 * ord(" ") + sum(block[156:])


@pytest.mark.parametrize(("field", "mode"), [
    (b"0000644\0", 0o644),  # what tar, tarfile and TarWriter write
    (b"    644 ", 0o644),  # space-padded, no NUL (old tars)
    (b"000644 \0", 0o644),
    (b"00000644", 0o644),  # all eight digits, no terminator
    (b"644\0\0\0\0\0", 0o644),
    (b"\0" * 8, 0),  # empty
    (b"\x80" + (0o644).to_bytes(7, "big"), 0o644),  # GNU base-256
])
def test_numeric_fields_are_read_in_every_spelling(field: bytes, mode: int) -> None:
    [member] = TarReader(io.BytesIO(with_field(tarfile_bytes(), 100, field)))
    assert member.mode == mode


@pytest.mark.parametrize("checksum", [b"%06o\0 ", b"%07o\0", b"%06o  ", b" %06o\0"])
def test_checksums_are_read_in_every_spelling(checksum: bytes) -> None:
    block = bytearray(tarfile_bytes()[:BLOCK])
    block[148:156] = b" " * 8
    block[148:156] = checksum % sum(block)
    [member] = TarReader(io.BytesIO(bytes(block) + tarfile_bytes()[BLOCK:]))
    assert member.name == "a.txt"


def test_a_size_in_base_256_is_read() -> None:
    data = with_field(tarfile_bytes(), 124, b"\x80" + (3).to_bytes(11, "big"))
    reader = TarReader(io.BytesIO(data))
    [(member, body)] = [(m, reader.read_body(100)) for m in reader]
    assert (member.size, body) == (3, b"abc")


@pytest.mark.parametrize("start", [100, 124, 136], ids=["mode", "size", "mtime"])
def test_a_field_that_is_not_a_number_is_refused(start: int) -> None:
    with pytest.raises(ArchiveError, match="is not a number"):
        list(TarReader(io.BytesIO(with_field(tarfile_bytes(), start, b"00x0644\0"))))


def test_a_pax_header_that_is_not_a_number_is_refused() -> None:
    data = tarfile_bytes(pax={"mtime": "1.5"})
    assert data[156:157] == b"x"
    with pytest.raises(ArchiveError, match="mode is not a number"):
        list(TarReader(io.BytesIO(with_field(data, 100, b"00x0644\0"))))


def test_a_repeated_pax_header_is_still_verified() -> None:
    """The reader skips re-verifying a pax header equal to the last one: a changed one with a
    stale checksum must still be refused."""
    first = tarfile_bytes(pax={"mtime": "1.5"})[:4 * BLOCK]  # pax header, records, member
    second = bytearray(first)
    second[0] ^= 1  # the pax header's name: its checksum no longer matches
    with pytest.raises(ArchiveError, match="checksum"):
        list(TarReader(io.BytesIO(first + first + bytes(second) + bytes(2 * BLOCK))))


# --- reading from any source -------------------------------------------------------------

class Trickle:
    """A source giving at most `step` bytes a read, as a slow pipe would."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = data
        self._position = 0
        self._step = step

    def read(self, size: int = -1) -> bytes:
        count = min(size, self._step)
        chunk = self._data[self._position:self._position + count]
        self._position += len(chunk)
        return chunk


def read_all(reader: TarReader, limit: int = 1 << 20) -> list[tuple[Member, bytes]]:
    members = []
    for member in reader:
        body = []
        while chunk := reader.read_body(limit):
            body.append(chunk)
        members.append((member, b"".join(body)))
    return members


@pytest.mark.parametrize(("step", "big"), [(1, 20_000), (7, 20_000), (511, 3 << 20),
                                           (513, 3 << 20), (4096, 3 << 20), (1 << 20, 3 << 20)])
def test_a_source_giving_little_at_a_time_reads_the_same(tmp_path: Path, step: int,
                                                          big: int) -> None:
    make_tree(tmp_path)
    (tmp_path / "big.bin").write_bytes(os.urandom(big))
    data = write_with_ours(tmp_path)
    expected = read_all(TarReader(io.BytesIO(data)))
    bodies = {member.name: body for member, body in expected}
    assert len(bodies) == 8 and bodies["big.bin"] == (tmp_path / "big.bin").read_bytes()
    assert read_all(TarReader(Trickle(data, step)), limit=5000) == expected


def test_a_body_cut_short_by_the_source_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(100_000))
    data = write_with_ours(tmp_path)
    reader = TarReader(Trickle(data[:50_000], 1000))
    [member] = list(itertools.islice(reader, 1))
    with pytest.raises(ArchiveError, match="ends inside a member's body"):
        while reader.read_body(1 << 20):
            pass
    assert member.name == "big.bin"


# --- the writer --------------------------------------------------------------------------

class RecordingSink:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.writes.append(bytes(data))
        return len(data)


def test_the_writer_hands_the_sink_few_large_writes(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "big.bin").write_bytes(os.urandom(3 << 20))
    for index in range(300):
        (tmp_path / f"small-{index}").write_bytes(os.urandom(index * 10))
    sink = RecordingSink()
    writer = TarWriter(sink)
    for path in sorted(tmp_path.rglob("*")):
        writer.add(str(path), str(path.relative_to(tmp_path)), path.lstat())
    writer.close()
    assert len(sink.writes) <= 5
    assert all(len(write) % FLUSH_SIZE == 0 for write in sink.writes[:-1])
    assert b"".join(sink.writes) == write_with_ours(tmp_path)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
def test_gnu_tar_extracts_what_the_agent_writes(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    make_tree(src)
    os.utime(src / "empty", ns=(NS_MTIME,) * 2)
    subprocess.run(["tar", "-xf", "-", "-C", str(out)], input=write_with_ours(src), check=True)
    for path in src.rglob("*"):
        copy = out / path.relative_to(src)
        if path.is_symlink():
            assert os.readlink(copy) == os.readlink(path)
        elif path.is_file():
            assert copy.read_bytes() == path.read_bytes()
            assert copy.stat().st_mtime_ns == path.stat().st_mtime_ns
    assert (out / "empty").stat().st_mtime_ns == NS_MTIME


def write_members(*members: tuple[str, Path, os.stat_result]) -> bytes:
    sink = io.BytesIO()
    writer = TarWriter(sink)
    for name, path, st in members:
        writer.add(str(path), name, st)
    writer.close()
    return sink.getvalue()


def with_mtime(path: Path, mtime_ns: int) -> os.stat_result:
    """The file's lstat with another mtime (some file systems cannot store every time)."""
    st = path.lstat()
    return SimpleNamespace(st_mode=st.st_mode, st_size=st.st_size,  # type: ignore[return-value]
                           st_mtime_ns=mtime_ns)


def with_field(data: bytes, start: int, field: bytes) -> bytes:
    """data with field written into its first header, the checksum made right again."""
    block = bytearray(data[:BLOCK])
    block[start:start + len(field)] = field
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block) + data[BLOCK:]


# --- sparse files (GNU 1.0) -----------------------------------------------------------------

def sparse_member(sparse_map: bytes, data: bytes, realsize: int = 1 << 20,
                  version: tuple[str, str] = ("1", "0")) -> bytes:
    """One sparse member as a hostile agent could write it: any map, any data after it."""
    body = sparse_map + bytes(-len(sparse_map) % BLOCK) + data
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("GNUSparseFile.0/s")
        info.size = len(body)
        info.pax_headers = {"GNU.sparse.major": version[0], "GNU.sparse.minor": version[1],
                            "GNU.sparse.name": "s", "GNU.sparse.realsize": str(realsize)}
        tar.addfile(info, io.BytesIO(body))
    return sink.getvalue()


def test_a_sparse_member_is_extracted_with_its_holes(tmp_path: Path) -> None:
    extract_tar_stream(io.BytesIO(sparse_member(b"2\n0\n3\n4096\n2\n", b"abcde")),
                       tmp_path / "out")
    written = tmp_path / "out" / "s"
    assert written.stat().st_size == 1 << 20
    assert written.read_bytes() == b"abc" + bytes(4093) + b"de" + bytes((1 << 20) - 4098)


@pytest.mark.parametrize(("sparse_map", "data", "realsize", "version"), [
    (b"2\n0\n3\n2\n2\n", b"abcde", 1 << 20, ("1", "0")),  # overlapping segments
    (b"1\n0\n3\n", b"abcde", 1 << 20, ("1", "0")),  # more data than the map says
    (b"1\n0\n9\n", b"abc", 1 << 20, ("1", "0")),  # less
    (b"1\n10\n5\n", b"abcde", 12, ("1", "0")),  # past the real size
    (b"999999999999\n", b"", 1 << 20, ("1", "0")),  # more segments than bytes
    (b"9" * 5000 + b"\n", b"", 1 << 20, ("1", "0")),  # a count no int should parse
    (b"1\n0\nx\n", b"a", 1 << 20, ("1", "0")),  # not a number
    (b"0\n", b"", 1 << 70, ("1", "0")),  # a size no file system holds
    (b"0\n", b"", 10, ("0", "1")),  # another sparse format
])
def test_a_bad_sparse_member_is_refused(tmp_path: Path, sparse_map: bytes, data: bytes,
                                        realsize: int, version: tuple[str, str]) -> None:
    with pytest.raises(ArchiveError, match="sparse"):
        extract_tar_stream(io.BytesIO(sparse_member(sparse_map, data, realsize, version)),
                           tmp_path / "out")
    assert not (tmp_path / "out").exists()
