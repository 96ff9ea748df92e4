"""Walking and removing trees of any depth, whatever modes a task left on them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buildr_podman.archive.owned import remove_tree, remove_tree_or_fail, walk_tree

LEVELS = 1500  # past Python 3.11's recursion limit (1,000) for os.walk and shutil.rmtree


def deep_tree(root: Path, levels: int = LEVELS, closed: bool = True) -> None:
    """levels nested directories, each with a file; every 100th is closed (mode 000) or
    read-only, as a task may leave them."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    closed = []
    for level in range(levels):
        os.mkdir("d", dir_fd=fd)
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
        if closed and level % 100 == 50:
            closed.append((fd, 0o500 if level % 200 == 50 else 0))
            fd = os.dup(fd)
    os.close(fd)
    for directory_fd, mode in closed:  # closed last: their contents were made first
        os.fchmod(directory_fd, mode)
        os.close(directory_fd)


def test_walk_tree_goes_down_any_depth_in_os_walk_order(tmp_path: Path) -> None:
    deep_tree(tmp_path / "t", levels=5)
    (tmp_path / "t" / "e").mkdir()
    os.symlink("d", tmp_path / "t" / "link")
    ours = [(p, sorted(d), sorted(f)) for p, d, f in walk_tree(tmp_path / "t")]
    assert ours == [(p, sorted(d), sorted(f)) for p, d, f in os.walk(tmp_path / "t")]
    deep_tree(tmp_path / "deep", closed=False)
    try:
        assert sum(1 for _ in walk_tree(tmp_path / "deep")) == LEVELS + 1
    finally:
        remove_tree(tmp_path / "deep")  # pytest's own clean-up recurses per level


@pytest.mark.parametrize("remove", [remove_tree, remove_tree_or_fail])
def test_a_1500_level_tree_with_closed_directories_is_removed(tmp_path: Path, remove) -> None:
    deep_tree(tmp_path / "t")
    os.symlink(tmp_path / "outside", tmp_path / "t" / "link")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "kept").write_text("kept")
    remove(tmp_path / "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside"]
    assert (tmp_path / "outside" / "kept").read_text() == "kept", "a symlink is never followed"


def test_removing_what_is_gone_or_a_file_works(tmp_path: Path) -> None:
    remove_tree_or_fail(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    remove_tree_or_fail(tmp_path / "file")
    assert not (tmp_path / "file").exists()
