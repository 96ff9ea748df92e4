"""What a container with `inputs = "copy"` gets: every entry of the inputs, named by its place
in the workspace, directories before their contents, symlinks as links."""

from __future__ import annotations

from pathlib import Path

from buildr_podman.model import ContainerSpec, Project, Task
from buildr_podman.podman.input_copy import input_entries


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
    return [name for _, name in input_entries(project, task)]


def test_the_whole_repository_without_a_mapping(tmp_path: Path) -> None:
    assert names(repo(tmp_path), make_task()) == [
        "src", "top.txt", "src/b", "src/to-b", "src/a.txt", "src/b/c.txt"]


def test_a_mapping_renames_and_a_symlink_to_a_directory_is_not_followed(tmp_path: Path) -> None:
    project = repo(tmp_path)
    entries = list(input_entries(project, make_task((("src", "code"),))))
    assert [name for _, name in entries] == [
        "code", "code/b", "code/to-b", "code/a.txt", "code/b/c.txt"]
    assert entries[3] == (str(tmp_path / "src" / "a.txt"), "code/a.txt")
