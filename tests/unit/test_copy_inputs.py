"""What a container with `inputs = "copy"` gets: every entry of the inputs, named by its place
in the workspace, directories before their contents, symlinks as links; copied with their modes
and exact mtimes, or one line that says what stopped the copy."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from buildr_podman.errors import BackendError
from buildr_podman.model import ContainerSpec, Project, Task
from buildr_podman.podman import input_copy
from buildr_podman.podman.input_copy import InputCopy, copy_inputs, input_entries
from buildr_podman.podman.input_mapping import mapped_directories


def make_task(mapping: tuple[tuple[str, str], ...] = ()) -> Task:
    return Task(name="t", module_type="script", script="true", input_mapping=mapping,
                container=ContainerSpec(image="i", inputs="copy"))


def repo(tmp_path: Path) -> Project:
    (tmp_path / "src" / "b").mkdir(parents=True)
    (tmp_path / "src" / "a.txt").write_text("a")
    (tmp_path / "src" / "b" / "c.txt").write_text("c")
    (tmp_path / "src" / "to-b").symlink_to("b")
    (tmp_path / "top.txt").write_text("top")
    return Project(root=tmp_path, out_dir=tmp_path / ".buildr" / "out")


def names(project: Project, task: Task) -> list[str]:
    return [name for _, name in input_entries(mapped_directories(project, task))]


def test_the_whole_repository_without_a_mapping(tmp_path: Path) -> None:
    assert names(repo(tmp_path), make_task()) == [
        "src", "top.txt", "src/b", "src/to-b", "src/a.txt", "src/b/c.txt"]


def test_a_mapping_renames_and_a_symlink_to_a_directory_is_not_followed(tmp_path: Path) -> None:
    project = repo(tmp_path)
    entries = list(input_entries(mapped_directories(project, make_task((("src", "code"),)))))
    assert [name for _, name in entries] == [
        "code", "code/b", "code/to-b", "code/a.txt", "code/b/c.txt"]
    assert entries[3] == (str(tmp_path / "src" / "a.txt"), "code/a.txt")


def test_the_copy_keeps_contents_modes_links_and_exact_mtimes(tmp_path: Path) -> None:
    project = repo(tmp_path / "repo")
    src = project.root / "src"
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o750)
    os.mkfifo(src / "fifo")  # never copied, as never returned
    os.utime(src / "a.txt", ns=(1, 1_700_000_000_123_456_789))
    (src / "b").chmod(0o710)
    os.utime(src / "b", ns=(1, 1_600_000_000_987_654_321))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    stats = copy_inputs(mapped_directories(project, make_task()), workspace)
    copied = workspace / "src"
    assert sorted(p.name for p in copied.iterdir()) == ["a.txt", "b", "run.sh", "to-b"]
    assert (copied / "b" / "c.txt").read_text() == "c"
    assert (copied / "run.sh").stat().st_mode & 0o777 == 0o750
    assert (copied / "a.txt").stat().st_mtime_ns == 1_700_000_000_123_456_789
    assert os.readlink(copied / "to-b") == "b"
    assert (copied / "b").stat().st_mode & 0o777 == 0o710
    assert (copied / "b").stat().st_mtime_ns == 1_600_000_000_987_654_321
    assert (stats.files, stats.bytes) == (4, len("a" + "c" + "top" + "#!/bin/sh\n"))


def test_a_mapping_below_directories_no_entry_names_is_copied(tmp_path: Path) -> None:
    project = repo(tmp_path / "repo")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    copy_inputs(mapped_directories(project, make_task((("src", "deep/er/code"),))), workspace)
    assert (workspace / "deep" / "er" / "code" / "b" / "c.txt").read_text() == "c"


def test_an_entry_deleted_since_the_walk_is_left_out(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Another task of the run may be replacing its out dir, under .buildr/out, meanwhile.
    project = repo(tmp_path / "repo")
    walked = list(input_entries(mapped_directories(project, make_task())))
    (project.root / "src" / "a.txt").unlink()
    (project.root / "src" / "to-b").unlink()
    monkeypatch.setattr(input_copy, "input_entries", lambda *args: iter(walked))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    assert copy_inputs(mapped_directories(project, make_task()), workspace).files == 2
    assert sorted(p.name for p in (workspace / "src").iterdir()) == ["b"]


def test_a_fifo_in_place_of_a_file_since_its_lstat_is_left_out_without_blocking(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = repo(tmp_path / "repo")
    fifo = project.root / "src" / "a.txt"
    was_a_file = os.lstat(fifo)
    fifo.unlink()
    os.mkfifo(fifo)
    real_lstat = input_copy._lstat  # the replacement lands between the lstat and the open
    monkeypatch.setattr(input_copy, "_lstat",
                        lambda path: was_a_file if path == str(fifo) else real_lstat(path))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    copy = InputCopy(make_task(), mapped_directories(project, make_task()), workspace)
    try:
        assert copy.wait(5.0), "the copy blocked on the FIFO"
    finally:
        if not copy.wait(0):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # lets the blocked open end
    copy.finish()
    assert sorted(p.name for p in (workspace / "src").iterdir()) == ["b", "to-b"]


def test_a_stopped_copy_copies_nothing_more(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    assert copy_inputs(mapped_directories(repo(tmp_path / "repo"), make_task()), workspace, stop).files == 0
    assert list(workspace.iterdir()) == []


@pytest.mark.parametrize(("error", "says"), [
    (PermissionError(errno.EACCES, "Permission denied", "/repo/secret"),
     ("task 't' into its container (Permission denied /repo/secret): make them readable, or "
      'use inputs = "mount"')),
    (OSError(errno.ENOSPC, "No space left on device", "/storage/x"),
     ("no space left for the inputs of task 't' in Podman's storage (No space left on device "
      '/storage/x): free some space there, or use inputs = "mount"')),
], ids=["unreadable", "disk full"])
def test_a_failed_copy_is_one_line_that_names_the_file(tmp_path: Path, error: OSError,
                                                      says: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise error

    monkeypatch.setattr(input_copy, "_copy_file", fail)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    copy = InputCopy(make_task(), mapped_directories(repo(tmp_path / "repo"), make_task()),
                     workspace)
    with pytest.raises(BackendError) as raised:
        copy.finish()
    assert says in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists any directory")
def test_an_unlistable_directory_fails_the_copy_with_its_name(tmp_path: Path) -> None:
    project = repo(tmp_path / "repo")
    locked = project.root / "src" / "b"
    locked.chmod(0)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    copy = InputCopy(make_task(), mapped_directories(project, make_task()), workspace)
    try:
        with pytest.raises(BackendError, match=f"Permission denied {locked}\\): make them "
                                               "readable"):
            copy.finish()
    finally:
        locked.chmod(0o755)


def test_bytes_are_read_and_written_where_copy_file_range_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)  # two file systems, an old kernel
    project = repo(tmp_path / "repo")
    data = os.urandom(3 * 1024 * 1024 + 17)
    (project.root / "src" / "big.bin").write_bytes(data)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    copy_inputs(mapped_directories(project, make_task()), workspace)
    assert (workspace / "src" / "big.bin").read_bytes() == data
