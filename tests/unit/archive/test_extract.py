"""Safe extraction: hostile members are refused, nothing lands outside, failures change nothing."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from buildr_podman.archive.extract import check_member, extract_tar_stream
from buildr_podman.archive.owned import process_umask
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


def with_pax(info_data: tuple[tarfile.TarInfo, bytes],
             **headers: str) -> tuple[tarfile.TarInfo, bytes]:
    """The member with pax records forced in (how a name with NUL can travel)."""
    info, data = info_data
    info.pax_headers = headers
    return info, data


def claiming(name: str, size: int, body: bytes) -> bytes:
    """A header that claims `size` bytes, followed by a body that is much shorter."""
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.PAX_FORMAT) + body


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
    "duplicate entry (same path spelt ./f)": [member("f", data=b"1"), member("./f", data=b"2")],
    "duplicate entry (a symlink replaces a directory mid-archive)": [
        member("d", tarfile.DIRTYPE), member("d/f", data=b"1"),
        member("d", tarfile.SYMTYPE, linkname=".."), member("d/outside.txt", data=b"x")],
    "duplicate entry (a symlink replaces a directory made for earlier members)": [
        member("a/b/f", data=b"1"), member("a/b", tarfile.SYMTYPE, linkname="/tmp"),
        member("a/b/g", data=b"2")],
    "duplicate entry (a file replaces a directory made for earlier members)": [
        member("a/f", data=b"1"), member("a", data=b"2")],
    "a path component longer than 255 bytes (a 4,000-character name)": [
        member("y" * 4000, data=b"x")],
    "control character (NUL in a pax path)": [
        with_pax(member("innocent", data=b"x"), path="evil\x00/../../outside.txt")],
    "control character (newline in a pax path)": [
        with_pax(member("innocent", data=b"x"), path="two\nlines")],
    "hard link (to a path outside, then a write through it)": [
        member("h", tarfile.LNKTYPE, linkname="../../outside.txt"), member("h", data=b"x")],
    "device (block)": [member("disk", tarfile.BLKTYPE)],
}


@pytest.mark.parametrize("reason", sorted(HOSTILE))
def test_hostile_members_are_refused_and_nothing_changes(target: Path, reason: str) -> None:
    data = tar_bytes(*HOSTILE[reason])
    with pytest.raises(ArchiveError) as info:
        extract_tar_stream(io.BytesIO(data), target)
    assert reason.split(" (")[0] in str(info.value)
    assert "\n" not in str(info.value)
    assert_untouched(target)


def test_a_4000_character_path_stays_inside_even_past_path_max(tmp_path: Path) -> None:
    """Deep but legal: components of 99 bytes. The staging path plus the name is longer than
    PATH_MAX (4096), so only fd-relative calls can reach it."""
    target = tmp_path / ("long-" * 40) / "out" / "task"
    deep = "/".join(["x" * 99] * 40)
    data = tar_bytes(member(deep, tarfile.DIRTYPE, mode=0o750), member(deep + "/f", data=b"ok"))
    stats = extract_tar_stream(io.BytesIO(data), target)
    assert (stats.files, stats.directories) == (1, 1)
    fd = os.open(target, os.O_RDONLY)
    try:
        for part in deep.split("/"):
            fd, parent = os.open(part, os.O_RDONLY, dir_fd=fd), fd
            os.close(parent)
        assert os.stat(fd).st_mode & 0o777 == 0o750
        assert os.stat("f", dir_fd=fd).st_size == 2
    finally:
        os.close(fd)


def test_a_long_name_is_shortened_in_the_message(target: Path) -> None:
    with pytest.raises(UnsafeArchiveMember) as info:
        extract_tar_stream(io.BytesIO(tar_bytes(member("z" * 5000, data=b"x"))), target)
    assert len(str(info.value)) < 300 and "(5000 characters)" in str(info.value)


@pytest.mark.parametrize(("size", "reason"), [
    (10 << 30, "ends inside its body"),  # under the limit: refused when the body runs out
    (1 << 40, "beyond the limit"),  # over it: refused before a byte is written
])
def test_a_huge_claimed_size_with_a_short_body_is_refused(target: Path, size: int,
                                                          reason: str) -> None:
    with pytest.raises(UnsafeArchiveMember, match=reason) as info:
        extract_tar_stream(io.BytesIO(claiming("huge", size, b"x" * 1000)), target)
    assert "'huge'" in str(info.value)
    assert_untouched(target)


@pytest.mark.parametrize("cut", [100, 612, 2560], ids=["in-a-header", "in-a-body", "no-end"])
def test_a_truncated_tar_stream_changes_nothing(target: Path, cut: int) -> None:
    """a: header 512 + body 1024 (600 padded); b: header 512 + body 512; then the end marker."""
    data = tar_bytes(member("a", data=b"x" * 600), member("b", data=b"y"))
    assert len(data) >= 2560 + 1024
    with pytest.raises(ArchiveError, match="broken archive|ends inside"):
        extract_tar_stream(io.BytesIO(data[:cut]), target)
    assert_untouched(target)


def test_the_bomb_limit_comes_from_max_return_size(tmp_path: Path) -> None:
    from buildr_podman.config import load_project

    (tmp_path / ".buildr").mkdir()
    (tmp_path / ".buildr" / "t.hcl").write_text(
        'buildr {\n  max_return_size = "1m"\n}\ntask "script" "t" {\n'
        '  container { image = "i" }\n  script = "true"\n}\n')
    task = load_project(tmp_path).tasks["t"]
    assert task.max_return_bytes == 1 << 20
    bomb = compress(tar_bytes(member("zeros", data=bytes(2 << 20))))
    with pytest.raises(UnsafeArchiveMember, match="max_return_size"):
        extract_tar_stream(S2Reader(io.BytesIO(bomb)), tmp_path / "out",
                           max_bytes=task.max_return_bytes or 0)
    assert not (tmp_path / "out").exists()


FULL_DISK = """
import io, resource, sys
from pathlib import Path
from buildr_podman.archive.extract import extract_tar_stream
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    extract_tar_stream(io.BytesIO(sys.stdin.buffer.read()), Path(sys.argv[1]))
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_a_full_disk_is_one_line_that_names_the_out_dir(target: Path) -> None:
    """RLIMIT_FSIZE makes writes past 1 MiB fail (EFBIG), as a full disk would (ENOSPC; the
    integration tests fill a real tmpfs). Python ignores SIGXFSZ, so the write just fails."""
    data = tar_bytes(member("small", data=b"s"), member("big", data=os.urandom(2 << 20)))
    said = subprocess.run([sys.executable, "-c", FULL_DISK, str(target)], input=data,
                          capture_output=True, check=True).stdout.decode()
    assert said.startswith(f"ArchiveError no space left under {target.parent} ")
    assert "while writing big" in said and said.count("\n") == 1
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


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores modes: nothing would be shown")
def test_an_output_with_read_only_directories_is_replaced_whole_next_time(target: Path) -> None:
    # A task's 555 directory keeps its files in place even for their owner: the previous
    # output must still go, and leave no trash beside the target.
    kept = tar_bytes(member("ro", tarfile.DIRTYPE, mode=0o555),
                     member("ro/f", data=b"old"),
                     member("none", tarfile.DIRTYPE, mode=0o000),
                     member("none/g", data=b"old"))
    extract_tar_stream(io.BytesIO(kept), target)
    assert (target / "ro").stat().st_mode & 0o777 == 0o555
    extract_tar_stream(io.BytesIO(tar_bytes(member("new", data=b"new"))), target)
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_modes_are_exact_whatever_the_umask(target: Path, umask: int) -> None:
    """Files are created with their mode and fixed with fchmod only when the umask took bits."""
    modes = {"rw": 0o644, "exec": 0o755, "group": 0o664, "read-only": 0o400, "none": 0o000}
    data = tar_bytes(*(member(name, data=name.encode(), mode=mode)
                       for name, mode in modes.items()))
    previous = os.umask(umask)
    try:
        assert process_umask() == umask
        extract_tar_stream(io.BytesIO(data), target)
    finally:
        os.umask(previous)
    for name, mode in modes.items():
        assert (target / name).stat().st_mode & 0o7777 == mode
        os.chmod(target / name, 0o600)
        assert (target / name).read_bytes() == name.encode()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
@pytest.mark.parametrize("setgid_parent", [False, True])
def test_directory_modes_and_times_are_exact(target: Path, umask: int,
                                             setgid_parent: bool) -> None:
    """A directory whose mode is final once made keeps it and only gets its time at the end;
    the others are set then. Under a setgid directory each new one inherits g+s from its
    parent, which the archive's mode does not have: it must not stay."""
    modes = {"usual": 0o755, "private": 0o700, "shared": 0o775, "read-only": 0o555,
             "closed": 0o000}
    data = tar_bytes(*(m for name, mode in modes.items()
                       for m in (member(name, tarfile.DIRTYPE, mode=mode),
                                 member(f"{name}/sub", tarfile.DIRTYPE, mode=mode),
                                 member(f"{name}/sub/f", data=b"x"))))
    if setgid_parent:
        target.parent.chmod(0o2755)
        if not target.parent.stat().st_mode & 0o2000:
            pytest.skip("this file system keeps no setgid bit on directories")
    previous = os.umask(umask)
    try:
        extract_tar_stream(io.BytesIO(data), target)
    finally:
        os.umask(previous)
    for name, mode in modes.items():
        top = target / name
        assert (stat.S_IMODE(top.stat().st_mode), top.stat().st_mtime) == (mode, 1_700_000_000)
        top.chmod(0o700)  # to look inside (the ctime moves, not the mtime)
        sub = top / "sub"
        assert (stat.S_IMODE(sub.stat().st_mode), sub.stat().st_mtime) == (mode, 1_700_000_000)
        sub.chmod(0o700)
        assert (sub / "f").read_bytes() == b"x"


def test_scratch_directories_of_killed_extractions_are_swept(tmp_path: Path) -> None:
    """A host killed mid-extraction leaves `.NAME.staging-PID-*` (and `.NAME.old-PID-*`)
    beside the target; the next extraction into it removes those whose process is gone, and
    nothing else."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(gone.stdout)
    abandoned = [tmp_path / f".t.staging-{dead}-abc", tmp_path / f".t.old-{dead}-def"]
    kept = [tmp_path / f".t.staging-{os.getpid()}-mine", tmp_path / f".u.staging-{dead}-xyz",
            tmp_path / ".t.staging-legacy"]
    for directory in abandoned + kept:
        (directory / "half").mkdir(parents=True)
    extract_tar_stream(io.BytesIO(tar_bytes(member("a.txt", data=b"a"))), tmp_path / "t")
    assert [d for d in abandoned if d.exists()] == []
    assert all(d.exists() for d in kept)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".t.")) == [
        f".t.staging-{os.getpid()}-mine", ".t.staging-legacy"]


def test_a_symlink_on_the_way_to_the_target_is_refused_never_followed(tmp_path: Path) -> None:
    """A task with write_back could make the out dir a link to the user's home: the next
    extraction into out/TASK would then replace ~/TASK. Reached from the anchor (the
    repository root) without following links, it is refused with one line instead."""
    outside = tmp_path / "home"
    (outside / "t").mkdir(parents=True)
    (outside / "t" / "precious").write_text("kept")
    root = tmp_path / "repo"
    root.mkdir()
    os.symlink(outside, root / "out")
    with pytest.raises(ArchiveError) as raised:
        extract_tar_stream(io.BytesIO(tar_bytes(member("a.txt", data=b"a"))),
                           root / "out" / "t", anchor=root)
    assert "'out' on the way there is not a directory (a symlink or file" in str(raised.value)
    assert (outside / "t" / "precious").read_text() == "kept"
    assert sorted(p.name for p in outside.iterdir()) == ["t"]


@pytest.mark.parametrize("replace_unmarked", [True, False])
def test_a_target_that_is_a_symlink_is_never_followed(tmp_path: Path,
                                                      replace_unmarked: bool) -> None:
    outside = tmp_path / "home"
    outside.mkdir()
    (outside / "precious").write_text("kept")
    os.symlink(outside, tmp_path / "t")
    archive = io.BytesIO(tar_bytes(member("a.txt", data=b"a")))
    if replace_unmarked:
        extract_tar_stream(archive, tmp_path / "t")
        assert not (tmp_path / "t").is_symlink()
        assert (tmp_path / "t" / "a.txt").read_text() == "a"
    else:
        with pytest.raises(ArchiveError, match="it is not a directory"):
            extract_tar_stream(archive, tmp_path / "t", replace_unmarked=False)
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]
    assert (outside / "precious").read_text() == "kept"


def test_an_existing_directory_this_tool_did_not_make_is_never_replaced(tmp_path: Path) -> None:
    """out_dir = "src" and a task named `lib`: the repository's src/lib is the user's. Only a
    target that carries this tool's mark is replaced where the caller says so."""
    mine = tmp_path / "lib"
    mine.mkdir()
    (mine / "code.c").write_text("the user's\n")
    archive = tar_bytes(member("a.txt", data=b"a"))
    with pytest.raises(ArchiveError, match=r"cannot replace .*/lib with the task's output: "
                                           r"buildr-podman did not make it, so it may be yours"):
        extract_tar_stream(io.BytesIO(archive), mine, replace_unmarked=False)
    assert [p.name for p in mine.iterdir()] == ["code.c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib"]  # no staging left
    out = tmp_path / "out"
    for _ in range(3):  # its own output, marked, is replaced run after run
        extract_tar_stream(io.BytesIO(archive), out, replace_unmarked=False)
        assert os.getxattr(out, "user.buildr-podman") == b"made"
        assert (out / "a.txt").read_text() == "a"
