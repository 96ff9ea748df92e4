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
from buildr_podman.podman.input_copy import InputCopy, copy_inputs
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


def names(project: Project, task: Task, workspace: Path) -> list[str]:
    workspace.mkdir()
    return copy_inputs(mapped_directories(project, task), workspace, root=project.root,
                       keep_names=True).names


def test_the_whole_repository_without_a_mapping(tmp_path: Path) -> None:
    assert names(repo(tmp_path / "repo"), make_task(), tmp_path / "ws") == [
        "src", "src/a.txt", "src/b", "src/b/c.txt", "src/to-b", "top.txt"]


def test_a_mapping_renames_and_a_symlink_to_a_directory_is_not_followed(tmp_path: Path) -> None:
    project = repo(tmp_path / "repo")
    assert names(project, make_task((("src", "code"),)), tmp_path / "ws") == [
        "code", "code/a.txt", "code/b", "code/b/c.txt", "code/to-b"]
    assert os.readlink(tmp_path / "ws" / "code" / "to-b") == "b"


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


def after_listing(monkeypatch: pytest.MonkeyPatch, where: Path, change) -> None:
    """Runs change() once, right after the copy listed the directory `where`."""
    real = input_copy._Copier._listing

    def listing(self, level):  # type: ignore[no-untyped-def]
        entries = real(self, level)
        if level.where == str(where):
            change()
        return entries

    monkeypatch.setattr(input_copy._Copier, "_listing", listing)


def test_an_entry_deleted_since_the_listing_is_left_out(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Another task of the run may be replacing its out dir, under .buildr/out, meanwhile.
    project = repo(tmp_path / "repo")

    def delete() -> None:
        (project.root / "src" / "a.txt").unlink()
        (project.root / "src" / "to-b").unlink()

    after_listing(monkeypatch, project.root.resolve() / "src", delete)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    assert copy_inputs(mapped_directories(project, make_task()), workspace,
                       root=project.root).files == 2
    assert sorted(p.name for p in (workspace / "src").iterdir()) == ["b"]


def test_a_fifo_in_place_of_a_file_since_the_listing_is_left_out_without_blocking(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = repo(tmp_path / "repo")
    fifo = project.root / "src" / "a.txt"

    def to_fifo() -> None:
        fifo.unlink()
        os.mkfifo(fifo)

    after_listing(monkeypatch, project.root.resolve() / "src", to_fifo)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    copy = InputCopy(make_task(), mapped_directories(project, make_task()), workspace,
                     project.root)
    try:
        assert copy.wait(5.0), "the copy blocked on the FIFO"
    finally:
        if not copy.wait(0):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # lets the blocked open end
    copy.finish()
    assert sorted(p.name for p in (workspace / "src").iterdir()) == ["b", "to-b"]


def swap_symlink_for_directory_on_open(monkeypatch: pytest.MonkeyPatch, trigger: str,
                                       link: Path) -> None:
    """When the copy opens the file named `trigger` (in the directory that holds `link`), the
    symlink `link` is replaced by a real directory holding `planted`: what another task's new
    output does to its old one while this copy walks it. Hooked on os.open, which every
    version of the copy calls per file, so the race hits at the same point in each."""
    real_open = os.open
    done = []

    def open_and_swap(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        fd = real_open(path, flags, *args, **kwargs)
        if not done and os.path.basename(str(path)) == trigger and not flags & os.O_WRONLY:
            done.append(True)
            link.unlink()
            link.mkdir()
            (link / "planted").write_text("the task's content\n")
        return fd

    monkeypatch.setattr(os, "open", open_and_swap)


def test_a_symlink_swapped_for_a_directory_mid_copy_never_leads_outside(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The -j 2 race of issue 13: a task's previous output held `x -> outside`; its new
    output, put in place while another task's copy walks it, has a real directory `x`. The
    copy made the link in the workspace, then walked into the new directory and wrote through
    the link. Now a listed symlink is a link, and nothing is ever entered but the directory
    that was listed, through fds on both sides."""
    project = repo(tmp_path / "repo")
    outside = tmp_path / "outside"
    outside.mkdir()
    out = project.root / ".buildr" / "out" / "A"
    out.mkdir(parents=True)
    (out / "f1").write_text("1")
    (out / "x").symlink_to(outside)
    swap_symlink_for_directory_on_open(monkeypatch, "f1", out / "x")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    copy_inputs(mapped_directories(project, make_task()), workspace, root=project.root)
    assert list(outside.iterdir()) == []
    assert (workspace / ".buildr" / "out" / "A" / "f1").read_text() == "1"


def test_a_mapped_source_that_became_a_symlink_is_refused(tmp_path: Path) -> None:
    project = repo(tmp_path / "repo")
    directories = mapped_directories(project, make_task((("src", "code"),)))
    (project.root / "src").rename(project.root / "real-src")
    (project.root / "src").symlink_to(tmp_path)  # after the check: the copy must not follow
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with pytest.raises(OSError) as raised:
        copy_inputs(directories, workspace, root=project.root)
    assert raised.value.errno in (errno.ELOOP, errno.ENOTDIR)  # Linux says ENOTDIR for a link
    assert list(workspace.iterdir()) == []


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

    monkeypatch.setattr(input_copy._Copier, "_copy_file", fail)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    project = repo(tmp_path / "repo")
    copy = InputCopy(make_task(), mapped_directories(project, make_task()), workspace,
                     project.root)
    with pytest.raises(BackendError) as raised:
        copy.finish()
    first = project.root.resolve() / "src" / "a.txt"  # named by its host path
    assert says.replace("/repo/secret", str(first)).replace("/storage/x", str(first)) in str(
        raised.value) and "\n" not in str(raised.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists any directory")
def test_an_unlistable_directory_fails_the_copy_with_its_name(tmp_path: Path) -> None:
    project = repo(tmp_path / "repo")
    locked = project.root / "src" / "b"
    locked.chmod(0)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    copy = InputCopy(make_task(), mapped_directories(project, make_task()), workspace,
                     project.root)
    try:
        with pytest.raises(BackendError, match=f"Permission denied {locked.resolve()}\\): make them "
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
