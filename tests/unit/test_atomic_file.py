"""write_atomically: the new bytes whole, or the old file untouched and nothing left behind."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from buildr_podman.atomic_file import write_atomically


def test_it_replaces_the_file_whole_and_only_the_user_may_read_it(tmp_path: Path) -> None:
    target = tmp_path / "memo"
    target.write_bytes(b"old")
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["memo"]  # no temporary file left beside it


def test_the_temporary_file_goes_where_it_is_told(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    spool = tmp_path / "tmp"
    spool.mkdir()
    sources: list[Path] = []
    real_replace = os.replace

    def replace(source: Path, destination: Path) -> None:
        sources.append(Path(source).parent)
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    write_atomically(tmp_path / "entry", b"x", temporary_dir=spool)
    assert sources == [spool]
    assert (tmp_path / "entry").read_bytes() == b"x" and not list(spool.iterdir())


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "memo"
    target.write_bytes(b"old")

    def full_disk(source: str | Path, destination: str | Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["memo"]


def test_a_directory_in_the_way_is_an_error_not_a_loss(tmp_path: Path) -> None:
    (tmp_path / "memo").mkdir()
    (tmp_path / "memo" / "kept").write_bytes(b"1")
    with pytest.raises(OSError):
        write_atomically(tmp_path / "memo", b"new")
    assert (tmp_path / "memo" / "kept").read_bytes() == b"1"
    assert sorted(os.listdir(tmp_path)) == ["memo"]


def test_writers_at_the_same_moment_each_leave_a_whole_file(tmp_path: Path) -> None:
    # Threads of one process: the temporary names must differ even within one pid.
    target = tmp_path / "memo"
    payloads = [bytes([n]) * 100_000 for n in range(8)]
    threads = [threading.Thread(target=write_atomically, args=(target, data))
               for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.read_bytes() in payloads
    assert os.listdir(tmp_path) == ["memo"]
