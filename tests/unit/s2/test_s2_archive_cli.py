"""`buildr-podman archive list|extract` on a .tar.s2 written by the reference encoder."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from buildr_podman.cli import main
from buildr_podman.s2 import compress


def test_lists_and_extracts_the_reference_tar(vectors_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    archive = vectors_dir / "tree.tar.pad64k.s2"
    with tarfile.open(vectors_dir / "tree.tar") as tar:
        members = [m for m in tar.getmembers()]
    assert main(["archive", "list", str(archive)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] if "->" not in line else line.split()[-3] for line in listed] == [
        m.name for m in members]
    dest = tmp_path / "dest"
    assert main(["archive", "extract", str(archive), str(dest)]) == 0
    with tarfile.open(vectors_dir / "tree.tar") as tar:
        for member in members:
            if member.isreg():
                assert (dest / member.name).read_bytes() == tar.extractfile(member).read()


def test_a_hostile_archive_is_one_line_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    archive = tmp_path / "evil.tar.s2"
    archive.write_bytes(compress(raw.getvalue()))
    assert main(["archive", "extract", str(archive), str(tmp_path / "dest")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'../escape' refused: '..' in the path" in err
    assert not (tmp_path / "dest").exists() and not (tmp_path / "escape").exists()


def test_a_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["archive", "list", str(tmp_path / "nope.tar.s2")]) == 1
    assert "cannot open" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["holds a file", "is a file", "is a symlink"])
def test_extract_refuses_a_destination_it_would_replace(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    archive = tmp_path / "a.tar.s2"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("a.txt"), io.BytesIO(b""))
    archive.write_bytes(compress(raw.getvalue()))
    dest = tmp_path / "dest"
    if kind == "holds a file":
        dest.mkdir()
        (dest / "precious.txt").write_text("mine\n")
    elif kind == "is a file":
        dest.write_text("mine\n")
    else:
        (tmp_path / "elsewhere").mkdir()
        dest.symlink_to(tmp_path / "elsewhere")
    assert main(["archive", "extract", str(archive), str(dest)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(dest) in err and "name a new" in err
    if kind == "holds a file":
        assert (dest / "precious.txt").read_text() == "mine\n"
        assert sorted(p.name for p in dest.iterdir()) == ["precious.txt"]


def test_extract_into_an_empty_directory_works(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.s2"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("a.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    archive.write_bytes(compress(raw.getvalue()))
    (tmp_path / "dest").mkdir()
    assert main(["archive", "extract", str(archive), str(tmp_path / "dest")]) == 0
    assert (tmp_path / "dest" / "a.txt").read_bytes() == b"hi"
