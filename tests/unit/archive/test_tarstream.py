"""The lean tar reader and the agent's tar writer: interchangeable with `tarfile`."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from buildr_podman.agent.tarwriter import TarWriter
from buildr_podman.archive.tarstream import TarReader
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


def tarfile_bytes() -> bytes:
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w") as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    return sink.getvalue()
