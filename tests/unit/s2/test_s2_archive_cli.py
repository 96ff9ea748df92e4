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
