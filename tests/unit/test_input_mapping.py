"""Where a task's inputs come from: each input_mapping source must lead to a directory of the
repository, or the pod does not start and one line says what to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildr_podman.errors import BackendError
from buildr_podman.model import ContainerSpec, Project, Task
from buildr_podman.podman.input_mapping import mapped_directories


def make_task(mapping: tuple[tuple[str, str], ...] = ()) -> Task:
    return Task(name="t", module_type="script", script="true", input_mapping=mapping,
                container=ContainerSpec(image="i"), source=".buildr/x.hcl:3")


def repo(tmp_path: Path) -> Project:
    (tmp_path / "src" / "lib").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("n")
    return Project(root=tmp_path, out_dir=tmp_path / ".buildr" / "out")


def test_without_a_mapping_the_whole_repository_is_the_workspace(tmp_path: Path) -> None:
    assert mapped_directories(repo(tmp_path), make_task()) == [(tmp_path.resolve(), "")]


def test_each_mapping_names_its_directory_and_its_place(tmp_path: Path) -> None:
    task = make_task((("src", "code"), ("src/lib", "."), ("src/lib", "deep/er")))
    assert mapped_directories(repo(tmp_path), task) == [
        (tmp_path / "src", "code"), (tmp_path / "src" / "lib", ""),
        (tmp_path / "src" / "lib", "deep/er")]


def test_a_symlink_to_a_directory_of_the_repository_is_followed(tmp_path: Path) -> None:
    project = repo(tmp_path)
    (tmp_path / "current").symlink_to("src/lib")
    assert mapped_directories(project, make_task((("current", "x"),))) == [
        (tmp_path / "src" / "lib", "x")]


@pytest.mark.parametrize(("source", "says"), [
    ("nope", ('input_mapping source "nope" does not exist in {root}: create it, fix the '
              "path, or depend on the task that makes it")),
    ("notes.txt", 'input_mapping source "notes.txt" is not a directory: map directories only'),
    ("escape", ('input_mapping source "escape" leads out of the repository (to {outside}): '
                "map a directory of the repository, or mount that one with bind_mount")),
], ids=["missing", "a file", "a symlink out"])
def test_a_bad_source_is_one_line_naming_the_task_and_what_to_change(
        tmp_path: Path, source: str, says: str) -> None:
    root = tmp_path / "repo"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    project = repo(root)
    (root / "escape").symlink_to(outside)
    with pytest.raises(BackendError) as raised:
        mapped_directories(project, make_task(((source, "in"),)))
    message = str(raised.value)
    assert message.startswith("task 't' (.buildr/x.hcl:3): ")
    assert message.endswith(says.format(root=root, outside=outside.resolve()))
    assert "\n" not in message
