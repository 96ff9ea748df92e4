"""write_back: changes land in the repository, deletions too, never outside it."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import pytest

from buildr_podman.archive import write_back as write_back_module
from buildr_podman.archive.write_back import WriteBackConflict, apply_changes, repository_path
from buildr_podman.errors import ArchiveError


@pytest.mark.parametrize(("rel", "mapping", "expected"), [
    ("a/b.c", (), "a/b.c"),
    ("src/x.c", (("code", "src"),), "code/x.c"),
    ("src", (("code", "src"),), "code"),
    ("other/x.c", (("code", "src"),), None),
    ("gen/deep/x", (("lib", "gen"), ("lib/deep-src", "gen/deep")), "lib/deep-src/x"),
])
def test_workspace_paths_map_back_through_the_input_mapping(rel, mapping, expected) -> None:
    assert repository_path(rel, mapping) == expected


def make_repo(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "old.c").write_text("old\n")
    (repo / "src" / "keep.c").write_text("keep\n")
    (repo / "gone").mkdir()
    (repo / "gone" / "f").write_text("f\n")
    staged = tmp_path / "staged"
    (staged / "src" / "new").mkdir(parents=True)
    (staged / "src" / "new" / "gen.c").write_text("generated\n")
    (staged / "src" / "keep.c").write_text("formatted\n")
    os.symlink("keep.c", staged / "src" / "link")
    (staged / "empty").mkdir()
    return repo, staged


def test_changes_and_deletions_are_applied(tmp_path: Path) -> None:
    repo, staged = make_repo(tmp_path)
    stats = apply_changes(staged, repo, (), ["src/old.c", "gone/f", "gone"])
    assert (repo / "src" / "new" / "gen.c").read_text() == "generated\n"
    assert (repo / "src" / "keep.c").read_text() == "formatted\n"
    assert os.readlink(repo / "src" / "link") == "keep.c"
    assert (repo / "empty").is_dir()
    assert not (repo / "src" / "old.c").exists() and not (repo / "gone").exists()
    assert (stats.written, stats.deleted) == (4, 3)


def test_a_symlink_in_the_repository_is_never_followed(tmp_path: Path) -> None:
    repo, staged = make_repo(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, repo / "escape")
    os.symlink(outside, repo / "link")
    # The task replaced "escape" by a directory: the symlink goes, never followed.
    (staged / "escape").mkdir()
    (staged / "escape" / "evil").write_text("x")
    apply_changes(staged, repo, (), ["link/gone"])  # a deletion "through" a symlink: nothing
    assert list(outside.iterdir()) == []
    assert (repo / "escape" / "evil").read_text() == "x" and not (repo / "escape").is_symlink()
    assert (repo / "link").is_symlink()


def test_a_file_replaced_by_a_directory_and_a_directory_by_a_file_are_written_back(
        tmp_path: Path) -> None:
    repo, staged = make_repo(tmp_path)
    (repo / "thing").write_text("a file\n")
    (staged / "thing").mkdir()
    (staged / "thing" / "inside").write_text("in\n")
    (staged / "gone").write_text("now a file\n")  # the repository's gone/ held gone/f
    stats = apply_changes(staged, repo, (), ["gone/f"])
    assert (repo / "thing" / "inside").read_text() == "in\n"
    assert (repo / "gone").read_text() == "now a file\n"
    assert stats.deleted == 0  # gone/f went with its directory


def test_an_unsafe_deleted_path_deletes_nothing(tmp_path: Path) -> None:
    repo, staged = make_repo(tmp_path)
    (tmp_path / "precious").write_text("p")
    with pytest.raises(ArchiveError, match="unsafe deleted path"):
        apply_changes(staged, repo, (), ["src/old.c", "../precious"])
    assert (tmp_path / "precious").exists() and (repo / "src" / "old.c").exists()


def test_directories_the_task_made_get_their_modes_and_times_existing_ones_keep_theirs(
        tmp_path: Path) -> None:
    repo, staged = make_repo(tmp_path)
    (repo / "src").chmod(0o750)
    (staged / "gen" / "ro").mkdir(parents=True)
    (staged / "gen" / "ro" / "x.h").write_text("x\n")
    os.utime(staged / "gen" / "ro" / "x.h", ns=(5, 5))
    (staged / "gen" / "none").mkdir()
    (staged / "gen" / "none" / "y.h").write_text("y\n")
    for rel, mode, mtime_ns in (("gen/ro", 0o555, 1_000_000_000_123_456_789),
                                ("gen/none", 0o000, 4),  # not even listable by its owner
                                ("gen", 0o700, 2_000_000_000_987_654_321),
                                ("src", 0o777, 3)):
        (staged / rel).chmod(mode)
        os.utime(staged / rel, ns=(mtime_ns, mtime_ns))
    apply_changes(staged, repo, (), [])
    assert (repo / "gen" / "ro" / "x.h").read_text() == "x\n"
    assert [(stat.S_IMODE((repo / rel).stat().st_mode), (repo / rel).stat().st_mtime_ns)
            for rel in ("gen/ro", "gen/none", "gen")] == [
        (0o555, 1_000_000_000_123_456_789), (0o000, 4), (0o700, 2_000_000_000_987_654_321)]
    (repo / "gen" / "none").chmod(0o700)
    assert (repo / "gen" / "none" / "y.h").read_text() == "y\n"
    assert stat.S_IMODE((repo / "src").stat().st_mode) == 0o750


def test_nothing_is_written_or_deleted_in_buildr_or_the_out_dir(tmp_path: Path) -> None:
    """.buildr/ holds the configuration and, by default, the out dir: the host writes logs and
    other tasks' outputs there, so a link a task planted there would turn a later write of the
    host's into one outside. Dropped and named, as is a file that would replace a directory
    holding the out dir."""
    repo, staged = make_repo(tmp_path)
    (repo / ".buildr" / "out" / "other").mkdir(parents=True)
    (repo / ".buildr" / "tasks.hcl").write_text("config\n")
    (repo / "build" / "out").mkdir(parents=True)
    (staged / ".buildr" / "out").mkdir(parents=True)
    os.symlink("/home/user/.bashrc", staged / ".buildr" / "out" / "t.log")
    (staged / "build" / "out" / "other").mkdir(parents=True)
    (staged / "build" / "out" / "other" / "bin").write_text("evil")
    (staged / "build" / "keep").write_text("fine")
    stats = apply_changes(staged, repo, (), [".buildr/tasks.hcl", "src/old.c"],
                          protected=(".buildr", "build/out"))
    assert not os.path.lexists(repo / ".buildr" / "out" / "t.log")
    assert (repo / ".buildr" / "tasks.hcl").read_text() == "config\n"
    assert not (repo / "build" / "out" / "other").exists()
    assert (repo / "build" / "keep").read_text() == "fine"
    assert not (repo / "src" / "old.c").exists()
    assert sorted(stats.protected) == [".buildr/out/t.log", ".buildr/tasks.hcl",
                                       "build/out/other/bin"]


def test_an_ancestor_of_the_out_dir_is_never_replaced_by_a_file(tmp_path: Path) -> None:
    repo, staged = make_repo(tmp_path)
    (repo / "build" / "out" / "t").mkdir(parents=True)
    (staged / "build").write_text("a file now")
    stats = apply_changes(staged, repo, (), [], protected=(".buildr", "build/out"))
    assert (repo / "build" / "out" / "t").is_dir()
    assert stats.protected == ["build"]


def test_a_path_changed_while_the_task_ran_is_a_conflict_and_nothing_is_applied(
        tmp_path: Path) -> None:
    """The user saved src/keep.c, and another file the task deletes, while the task ran: the
    task's versions would overwrite those edits. Refused by name; the repository keeps every
    file as it is (the task's other changes included)."""
    repo, staged = make_repo(tmp_path)
    started = time.time_ns()
    time.sleep(0.02)  # past a tick of the file system's clock
    (repo / "src" / "keep.c").write_text("the user's edit\n")
    (repo / "gone" / "f").write_text("edited too\n")
    with pytest.raises(WriteBackConflict) as raised:
        apply_changes(staged, repo, (), ["gone/f", "src/old.c"], started_ns=started)
    assert raised.value.paths == ["gone/f", "src/keep.c"]
    assert "2 paths changed in the repository while the task ran ('gone/f', 'src/keep.c')" \
        in str(raised.value)
    assert (repo / "src" / "keep.c").read_text() == "the user's edit\n"
    assert (repo / "gone" / "f").read_text() == "edited too\n"
    assert (repo / "src" / "old.c").exists() and not (repo / "src" / "new").exists()
    assert (staged / "src" / "new" / "gen.c").exists()  # the task's changes stay staged


def test_paths_unchanged_since_the_start_are_applied(tmp_path: Path) -> None:
    repo, staged = make_repo(tmp_path)
    time.sleep(0.02)
    stats = apply_changes(staged, repo, (), ["src/old.c"], started_ns=time.time_ns())
    assert (repo / "src" / "keep.c").read_text() == "formatted\n"
    assert (stats.written, stats.deleted) == (4, 1)


def test_a_directory_replaced_by_a_file_conflicts_if_anything_inside_changed(
        tmp_path: Path) -> None:
    repo, staged = make_repo(tmp_path)
    (repo / "gone" / "deep").mkdir()
    started = time.time_ns()
    time.sleep(0.02)
    (repo / "gone" / "deep" / "new-work.txt").write_text("mine\n")
    (staged / "gone").write_text("now a file\n")
    with pytest.raises(WriteBackConflict, match="'gone'"):
        apply_changes(staged, repo, (), [], started_ns=started)
    assert (repo / "gone" / "deep" / "new-work.txt").read_text() == "mine\n"


def test_a_failure_half_way_puts_everything_back(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """All or nothing: the third move fails (a read-only directory, a full disk); what the
    first ones replaced comes back, what they made goes, and the error says so."""
    repo, staged = make_repo(tmp_path)
    (repo / "src" / "link").write_text("was a file\n")
    before = {p.relative_to(repo): (p.read_bytes() if p.is_file() else None)
              for p in sorted(repo.rglob("*"))}
    real_move = write_back_module._move
    calls = []

    def failing_move(*args: object) -> None:
        calls.append(args)
        if len(calls) == 3:
            raise OSError(errno.EACCES, "Permission denied")
        real_move(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(write_back_module, "_move", failing_move)
    with pytest.raises(ArchiveError, match=r"cannot write back src/new/gen.c: Permission denied; "
                                           r"the repository is as it was"):
        apply_changes(staged, repo, (), ["src/old.c"])
    after = {p.relative_to(repo): (p.read_bytes() if p.is_file() else None)
             for p in sorted(repo.rglob("*"))}
    assert after == {**before, Path(".buildr"): None}  # the private directory is gone


def test_deletions_of_what_a_layer_laid_over_the_repository_are_picked_out(
        tmp_path: Path) -> None:
    from buildr_podman.archive.write_back import laid_over_by_layers

    repo, layer = tmp_path / "repo", tmp_path / "layer"
    for root in (repo, layer):
        (root / "gen").mkdir(parents=True)
    (repo / "gen" / "x.txt").write_text("the user's\n")  # under the layer's file
    (layer / "gen" / "x.txt").write_text("the dependency's\n")
    (repo / "gen" / "mine.txt").write_text("seen by the task\n")  # the layer has none
    (repo / "as-file").write_text("a file in the repository\n")  # the layer has a directory
    (layer / "as-file").mkdir()
    (layer / "link").symlink_to("/etc")  # a symlink of the layer: all beneath it is its
    (repo / "link").mkdir()
    (repo / "link" / "passwd").write_text("the user's\n")
    deleted = ["gen/x.txt", "gen/mine.txt", "gen", "as-file", "link/passwd", "../x", "only-here"]
    assert laid_over_by_layers(deleted, [layer], repo, ()) == ["gen/x.txt", "as-file",
                                                              "link/passwd"]
    # Through an input mapping: the workspace's src/ is the repository's code/.
    (repo / "code").mkdir()
    (repo / "code" / "y").write_text("the user's\n")
    (layer / "src").mkdir()
    (layer / "src" / "y").write_text("the dependency's\n")
    assert laid_over_by_layers(["src/y"], [layer], repo, (("code", "src"),)) == ["src/y"]
    assert laid_over_by_layers(["gen/x.txt"], [], repo, ()) == []
