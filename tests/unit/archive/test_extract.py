"""Safe extraction: hostile members are refused, nothing lands outside, failures change nothing."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from buildr_podman.archive.extract import check_member, extract_tar_stream
from buildr_podman.errors import ArchiveError, CodecError, UnsafeArchiveMember
from buildr_podman.s2 import S2Reader, compress


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
           linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = linkname
    info.mtime = 1_700_000_000
    return info, data


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


@pytest.fixture
def target(tmp_path: Path) -> Path:
    out = tmp_path / "out" / "task"
    out.mkdir(parents=True)
    (out / "previous.txt").write_text("from the last run\n")
    (tmp_path / "outside.txt").write_text("precious\n")
    return out


def assert_untouched(target: Path) -> None:
    assert sorted(p.name for p in target.parent.parent.rglob("*")) == sorted(
        ["out", "task", "previous.txt", "outside.txt"])
    assert (target / "previous.txt").read_text() == "from the last run\n"
    assert (target.parent.parent / "outside.txt").read_text() == "precious\n"


HOSTILE = {
    "absolute path": [member("/etc/evil", data=b"x")],
    "'..' in the path": [member("../outside.txt", data=b"overwritten")],
    "'..' in the path (nested)": [member("a/../../outside.txt", data=b"x")],
    "through the non-directory": [member("esc", tarfile.SYMTYPE, linkname=".."),
                                  member("esc/outside.txt", data=b"overwritten")],
    "through the non-directory (absolute link)": [
        member("esc", tarfile.SYMTYPE, linkname="/"), member("esc/tmp/evil", data=b"x")],
    "hard link": [member("h", tarfile.LNKTYPE, linkname="/etc/passwd")],
    "device": [member("dev", tarfile.CHRTYPE)],
    "FIFO": [member("fifo", tarfile.FIFOTYPE)],
    "control character": [member("new\nline", data=b"x")],
    "longer than": [member("a/" * 2100 + "f", data=b"x")],
    "duplicate entry": [member("f", data=b"1"), member("f", data=b"2")],
}


@pytest.mark.parametrize("reason", sorted(HOSTILE))
def test_hostile_members_are_refused_and_nothing_changes(target: Path, reason: str) -> None:
    data = tar_bytes(*HOSTILE[reason])
    with pytest.raises(ArchiveError) as info:
        extract_tar_stream(io.BytesIO(data), target)
    assert reason.split(" (")[0] in str(info.value)
    assert "\n" not in str(info.value)
    assert_untouched(target)


def test_a_name_with_nul_is_refused_by_the_policy() -> None:
    info, _ = member("a\x00b")
    assert check_member(info) == "control character in the name"


def test_special_bits_are_neutralised(target: Path) -> None:
    data = tar_bytes(member("suid", data=b"#!/bin/sh\n", mode=0o6755),
                     member("sticky", tarfile.DIRTYPE, mode=0o1777))
    extract_tar_stream(io.BytesIO(data), target)
    assert (target / "suid").stat().st_mode & 0o7777 == 0o755
    assert (target / "sticky").stat().st_mode & 0o7777 == 0o777


def test_a_short_body_is_refused(target: Path) -> None:
    data = tar_bytes(member("big", data=b"x" * 10_000))
    truncated = data[:1536]  # header says 10,000 bytes; the body stops early
    with pytest.raises(ArchiveError):
        extract_tar_stream(io.BytesIO(truncated), target)
    assert_untouched(target)


def test_a_decompression_bomb_stops_at_the_limit(target: Path) -> None:
    bomb = compress(tar_bytes(member("zeros", data=bytes(8 << 20))))
    assert len(bomb) < 1 << 20
    with pytest.raises(UnsafeArchiveMember, match="beyond the limit"):
        extract_tar_stream(S2Reader(io.BytesIO(bomb)), target, max_bytes=1 << 20)
    assert_untouched(target)


def test_a_truncated_s2_stream_changes_nothing(target: Path) -> None:
    stream = compress(tar_bytes(member("a", data=os.urandom(100_000))))
    with pytest.raises(CodecError, match="truncated"):
        extract_tar_stream(S2Reader(io.BytesIO(stream[: len(stream) // 2])), target)
    assert_untouched(target)


def test_a_good_archive_replaces_the_target_whole(target: Path) -> None:
    data = tar_bytes(member("dir", tarfile.DIRTYPE, mode=0o750),
                     member("dir/file", data=b"content", mode=0o640),
                     member("link", tarfile.SYMTYPE, linkname="/usr/bin/env"))
    stats = extract_tar_stream(io.BytesIO(data), target)
    assert (stats.files, stats.symlinks, stats.directories) == (1, 1, 1)
    assert sorted(p.name for p in target.iterdir()) == ["dir", "link"]
    assert (target / "dir" / "file").read_bytes() == b"content"
    assert (target / "dir").stat().st_mode & 0o777 == 0o750
    assert (target / "dir" / "file").stat().st_mtime == 1_700_000_000
    assert os.readlink(target / "link") == "/usr/bin/env"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]
