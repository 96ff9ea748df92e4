"""ChangeTracker against the truth: the tree compared before and after, on real inotify."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildr_podman.agent import watcher as watcher_module
from buildr_podman.agent.snapshot import Baseline
from buildr_podman.agent.watcher import ChangeTracker, TrackerLimits


def tree_state(root: Path) -> dict[str, tuple]:
    """What a path is, by content: (kind, data, permission bits)."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                state[rel] = ("link", os.readlink(path), 0)
            elif stat.S_ISDIR(info.st_mode):
                state[rel] = ("dir", bool(os.listdir(path)), stat.S_IMODE(info.st_mode))
            else:
                state[rel] = ("file", path.read_bytes(), stat.S_IMODE(info.st_mode))
    return state


def expected_changes(before: dict[str, tuple], after: dict[str, tuple]) -> tuple[set, set]:
    returned = set()
    for rel, (kind, data, mode) in after.items():
        old = before.get(rel)
        if kind == "dir":
            made = old is None or old[0] != "dir"
            if made or old[2] != mode:  # new ones, or whose mode changed
                returned.add(rel)
        elif old != (kind, data, mode):
            returned.add(rel)
    return returned, set(before) - set(after)


def seed(root: Path) -> None:
    (root / "src" / "lib").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (root / "src" / "lib" / "util.c").write_text("/* util */\n")
    (root / "docs" / "readme.txt").write_text("read me\n")
    (root / "untouched.txt").write_text("never changes\n")
    os.symlink("src/main.c", root / "main-link")


def started_tracker(root: Path, limits: TrackerLimits | None = None) -> ChangeTracker:
    """A tracker watching root, against a baseline copied from root as it is now."""
    baseline = root.parent / f"{root.name}-baseline"
    shutil.copytree(root, baseline, symlinks=True)
    tracker = ChangeTracker(str(root), str(baseline), limits)
    tracker.start()
    return tracker


def track(root: Path, action, limits: TrackerLimits | None = None
          ) -> tuple[watcher_module.ChangeSet, set, set]:
    before = tree_state(root)
    tracker = started_tracker(root, limits)
    action(root)
    changes = tracker.stop()
    returned, deleted = expected_changes(before, tree_state(root))
    return changes, returned, deleted


def test_reports_created_modified_and_deleted_paths_only(tmp_path: Path) -> None:
    seed(tmp_path)

    def task(root: Path) -> None:
        (root / "src" / "main.c").write_text("int main(void) { return 1; }\n")
        (root / "out" / "a" / "b").mkdir(parents=True)
        (root / "out" / "a" / "b" / "x.o").write_bytes(b"\x7fELF")
        (root / "out" / "empty").mkdir()
        (root / "docs" / "readme.txt").unlink()
        (root / "tmp.txt").write_text("gone again")
        (root / "tmp.txt").unlink()
        os.chmod(root / "src" / "lib" / "util.c", 0o755)
        os.symlink("out/a/b/x.o", root / "latest")

    changes, returned, deleted = track(tmp_path, task)
    assert set(changes.returned) == returned == {
        "src/main.c", "out", "out/a", "out/a/b", "out/a/b/x.o", "out/empty", "src/lib/util.c",
        "latest"}
    assert set(changes.deleted) == deleted == {"docs/readme.txt"}
    assert changes.tracking == "inotify"


def test_renames_are_a_deletion_plus_a_creation(tmp_path: Path) -> None:
    seed(tmp_path)

    def task(root: Path) -> None:
        os.rename(root / "src" / "lib", root / "moved-lib")
        os.rename(root / "docs" / "readme.txt", root / "src" / "README")

    changes, returned, deleted = track(tmp_path, task)
    assert set(changes.returned) == returned == {"moved-lib", "moved-lib/util.c", "src/README"}
    assert set(changes.deleted) == deleted == {"src/lib", "src/lib/util.c", "docs/readme.txt"}


def test_overflow_falls_back_to_an_exact_rescan(tmp_path: Path, monkeypatch) -> None:
    seed(tmp_path)

    def task(root: Path) -> None:
        (root / "src" / "main.c").write_text("changed\n")
        (root / "new.txt").write_text("new\n")

    tracker = ChangeTracker(str(tmp_path))
    tracker.start()
    before = None  # the snapshot inside the tracker is the truth for this test
    task(tmp_path)
    tracker._mark_dirty("", "the inotify queue overflowed")  # as _on_event does on Q_OVERFLOW
    tracker._touched.clear()  # pretend every event was lost
    changes = tracker.stop()
    assert before is None
    assert set(changes.returned) == {"src/main.c", "new.txt"}
    assert changes.tracking == "rescan: the inotify queue overflowed"


def test_a_rewrite_with_the_same_bytes_is_not_a_change(tmp_path: Path) -> None:
    seed(tmp_path)

    def task(root: Path) -> None:
        (root / "src" / "main.c").write_text((root / "src" / "main.c").read_text())
        (root / "untouched.txt").touch()

    changes, returned, _ = track(tmp_path, task)
    assert changes.returned == [] and returned == set()


def rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """What `cp -p`, `touch -r` or `tar x` do: new bytes under the old size and mtime."""
    info = path.stat()
    assert len(data) == info.st_size
    path.write_bytes(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def replace_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """Another file renamed over it, with its size and mtime (`rsync -t` does this)."""
    info = path.stat()
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.utime(temporary, ns=(info.st_atime_ns, info.st_mtime_ns))
    os.rename(temporary, path)


@pytest.mark.parametrize("with_baseline", [True, False])
def test_a_rewrite_that_keeps_size_and_mtime_is_a_change(tmp_path: Path,
                                                         with_baseline: bool) -> None:
    root = tmp_path / "ws"
    seed(root)

    def task(root: Path) -> None:
        rewrite_keeping_size_and_mtime(root / "src" / "main.c",
                                       b"int main(void) { return 7; }\n")
        replace_keeping_size_and_mtime(root / "docs" / "readme.txt", b"READ ME\n")

    if with_baseline:
        changes, returned, _ = track(root, task)
    else:
        before = tree_state(root)
        tracker = ChangeTracker(str(root))
        tracker.start()
        task(root)
        changes = tracker.stop()
        returned, _ = expected_changes(before, tree_state(root))
    assert set(changes.returned) == returned == {"src/main.c", "docs/readme.txt"}


def test_a_warm_workspace_compares_each_tasks_bytes_afresh(tmp_path: Path) -> None:
    """Two tasks in a row write under the same size and mtime: the first the original bytes
    (no change), the second others (a change). A comparison cached by size and mtime, as
    filecmp's is, answered the second from the first."""
    root = tmp_path / "ws"
    seed(root)
    original = (root / "src" / "main.c").read_bytes()
    baseline = tmp_path / "baseline"
    shutil.copytree(root, baseline, symlinks=True)
    answers = []
    for data in (original, b"X" * len(original)):
        tracker = ChangeTracker(str(root), str(baseline))
        tracker.start()
        rewrite_keeping_size_and_mtime(root / "src" / "main.c", data)
        answers.append(tracker.stop().returned)
    assert answers == [[], ["src/main.c"]]


def test_watch_limit_marks_the_subtree_dirty_and_stays_exact(tmp_path: Path, monkeypatch) -> None:
    seed(tmp_path)
    real_add = watcher_module.inotify_simple.INotify.add_watch

    def add_watch(self, path, mask):  # the kernel's ENOSPC for one directory
        if str(path).endswith("src/lib"):
            raise OSError(28, "No space left on device")
        return real_add(self, path, mask)

    monkeypatch.setattr(watcher_module.inotify_simple.INotify, "add_watch", add_watch)

    def task(root: Path) -> None:
        (root / "src" / "lib" / "util.c").write_text("changed unseen\n")

    changes, returned, _ = track(tmp_path, task)
    assert set(changes.returned) == returned == {"src/lib/util.c"}
    assert "watch limit" in changes.tracking


NAMES = st.sampled_from(["a", "b", "c", "d"])
PATHS = st.lists(NAMES, min_size=1, max_size=4).map("/".join)
OPS = st.one_of(
    st.tuples(st.just("write"), PATHS, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("append"), PATHS, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("truncate"), PATHS, st.none()),
    st.tuples(st.just("chmod"), PATHS, st.none()),
    st.tuples(st.just("rename"), PATHS, PATHS),
    st.tuples(st.just("delete"), PATHS, st.none()),
    st.tuples(st.just("mkdir"), PATHS, st.none()),
    st.tuples(st.just("symlink"), PATHS, PATHS),
    st.tuples(st.just("replace_by_dir"), PATHS, st.none()),
)


def apply(root: Path, op: tuple) -> None:
    kind, rel, arg = op
    path = root / rel
    try:
        if kind == "write":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(arg)
        elif kind == "append":
            with open(path, "ab") as f:
                f.write(arg)
        elif kind == "truncate" and path.is_file() and path.stat().st_size:
            os.truncate(path, 0)
        elif kind == "chmod" and path.is_file() and not path.is_symlink():
            os.chmod(path, path.stat().st_mode ^ 0o100)
        elif kind == "rename":
            (root / arg).parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, root / arg)
        elif kind == "delete":
            if path.is_dir() and not path.is_symlink():
                for sub in sorted(path.rglob("*"), key=lambda p: -len(p.parts)):
                    sub.rmdir() if sub.is_dir() and not sub.is_symlink() else sub.unlink()
                path.rmdir()
            else:
                path.unlink()
        elif kind == "mkdir":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "symlink":
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(arg, path)
        elif kind == "replace_by_dir" and path.is_file():
            path.unlink()
            path.mkdir()
    except OSError:
        pass  # an impossible operation (ENOENT, EEXIST, ENOTDIR...) changes nothing


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(setup=st.lists(OPS, max_size=8), task_ops=st.lists(OPS, min_size=1, max_size=15))
def test_random_operations_match_the_before_after_comparison(tmp_path_factory, setup,
                                                              task_ops) -> None:
    root = tmp_path_factory.mktemp("ws")
    for op in setup:
        apply(root, op)

    def task(r: Path) -> None:
        for op in task_ops:
            apply(r, op)

    changes, returned, deleted = track(root, task)
    assert set(changes.returned) == returned
    assert set(changes.deleted) == deleted


@pytest.mark.parametrize("count", [20_000])
def test_a_burst_of_writes_in_an_existing_directory_loses_nothing(tmp_path: Path,
                                                                   count: int) -> None:
    (tmp_path / "d").mkdir()

    def task(root: Path) -> None:
        for i in range(count):
            (root / "d" / f"f{i}").write_bytes(b"x")

    changes, returned, _ = track(tmp_path, task)
    assert set(changes.returned) == returned
    assert len(returned) == count


def test_a_real_queue_overflow_is_caught_and_the_rescan_is_exact(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old").write_text("old")

    def task(root: Path) -> None:  # far more events than the kernel queue (16,384) holds
        for i in range(12_000):
            (root / "d" / f"f{i}").write_bytes(b"x")
        (root / "d" / "old").unlink()

    changes, returned, deleted = track(tmp_path, task, TrackerLimits(reader_delay=5.0))
    assert changes.tracking == "rescan: the inotify queue overflowed"
    assert set(changes.returned) == returned and len(returned) == 12_000
    assert set(changes.deleted) == deleted == {"d/old"}


def test_the_watch_limit_knob_forces_the_rescan(tmp_path: Path) -> None:
    seed(tmp_path)

    def task(root: Path) -> None:
        (root / "src" / "lib" / "util.c").write_text("changed\n")
        (root / "docs" / "readme.txt").unlink()

    changes, returned, deleted = track(tmp_path, task, TrackerLimits(max_watches=1))
    assert "watch limit" in changes.tracking
    assert set(changes.returned) == returned == {"src/lib/util.c"}
    assert set(changes.deleted) == deleted == {"docs/readme.txt"}


def test_without_a_baseline_a_snapshot_gives_the_same_answer(tmp_path: Path) -> None:
    seed(tmp_path)
    before = tree_state(tmp_path)
    tracker = ChangeTracker(str(tmp_path))  # no baseline: stats every path up front
    tracker.start()
    (tmp_path / "src" / "main.c").write_text("int main(void) { return 1; }\n")
    (tmp_path / "gen" / "x").mkdir(parents=True)
    (tmp_path / "gen" / "x" / "y.o").write_bytes(b"o")
    (tmp_path / "docs" / "readme.txt").unlink()
    changes = tracker.stop()
    returned, deleted = expected_changes(before, tree_state(tmp_path))
    assert set(changes.returned) == returned == {"src/main.c", "gen", "gen/x", "gen/x/y.o"}
    assert set(changes.deleted) == deleted == {"docs/readme.txt"}


def test_a_symlink_replaced_by_a_directory_is_never_followed_in_the_baseline(
        tmp_path: Path) -> None:
    seed(tmp_path)
    os.symlink("loop", tmp_path / "loop")  # a symlink loop
    os.symlink("/etc", tmp_path / "etc")  # and one pointing out of the tree

    def task(root: Path) -> None:
        for name in ("loop", "etc"):
            (root / name).unlink()
            (root / name).mkdir()
        (root / "loop" / "x").write_text("new\n")
        (root / "etc" / "passwd").write_text("not the host's\n")

    changes, returned, deleted = track(tmp_path, task)
    assert set(changes.returned) == returned == {"loop", "loop/x", "etc", "etc/passwd"}
    assert set(changes.deleted) == deleted


def test_a_directory_replaced_by_a_symlink_is_never_followed(tmp_path: Path) -> None:
    # Found by the property test above: a directory the task wrote in (so rescanned at the
    # end) replaced by a symlink to itself raised ELOOP, and one to a directory outside
    # returned that directory's files under the workspace's name.
    seed(tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret").write_text("not the task's\n")

    def task(root: Path) -> None:
        (root / "src" / "new.c").write_text("written, then its directory goes\n")
        (root / "docs" / "new.txt").write_text("the same\n")
        shutil.rmtree(root / "src")
        shutil.rmtree(root / "docs")
        os.symlink("src", root / "src")
        os.symlink(str(outside), root / "docs")

    changes, returned, deleted = track(tmp_path, task)
    assert set(changes.returned) == returned == {"src", "docs"}
    assert set(changes.deleted) == deleted == {
        "src/main.c", "src/lib", "src/lib/util.c", "docs/readme.txt"}


def test_the_resolution_yields_paths_before_it_has_scanned_everything(tmp_path: Path) -> None:
    seed(tmp_path)
    tracker = started_tracker(tmp_path)
    for d in range(3):  # three new directories: three dirty subtrees, scanned one by one
        (tmp_path / f"new{d}").mkdir()
        (tmp_path / f"new{d}" / "f").write_text("x")
    (tmp_path / "docs" / "readme.txt").unlink()
    resolution = tracker.stop_resolving()
    assert next(resolution) == "new0"
    changes = resolution.finish()
    assert changes.returned == ["new0", "new0/f", "new1", "new1/f", "new2", "new2/f"]
    assert changes.deleted == ["docs/readme.txt"]
    assert changes.resolve_seconds > 0


def test_a_new_tree_is_yielded_as_it_is_listed_in_archive_order(tmp_path: Path,
                                                                 monkeypatch) -> None:
    # The packer sends a new tree's first files while the rest is still being listed: the
    # host had nothing to extract for ~70 ms while 20,000 new files were listed whole. Each
    # directory comes before what it holds, its entries by name.
    seed(tmp_path)
    tracker = started_tracker(tmp_path)
    for d in ("b", "a", "a/z", "a-1", "c"):
        (tmp_path / "gen" / d).mkdir(parents=True)
        for f in ("y", "x"):
            (tmp_path / "gen" / d / f).write_text(d)
    listed: list[str] = []
    real_list = watcher_module.ACCESS.list_directory
    monkeypatch.setattr(watcher_module.ACCESS, "list_directory",
                        lambda path: listed.append(path) or real_list(path))
    resolution = tracker.stop_resolving()
    first = [next(resolution) for _ in range(3)]
    assert first == ["gen", "gen/a", "gen/a/x"]
    assert len(listed) == 2  # gen and gen/a, not yet the other four
    order = first + list(resolution)
    assert order == ["gen", "gen/a", "gen/a/x", "gen/a/y", "gen/a/z", "gen/a/z/x", "gen/a/z/y",
                     "gen/a-1", "gen/a-1/x", "gen/a-1/y", "gen/b", "gen/b/x", "gen/b/y",
                     "gen/c", "gen/c/x", "gen/c/y"]
    assert len(listed) == 6
    assert resolution.finish().returned == sorted(order)  # as the result reports them


def test_a_new_directory_is_judged_by_the_types_of_what_it_holds(tmp_path: Path) -> None:
    # Scanned by type alone (no stat): files, symlinks and directories come back, full or
    # empty; a FIFO never does.
    seed(tmp_path)
    tracker = started_tracker(tmp_path)
    new = tmp_path / "gen"
    (new / "sub" / "empty").mkdir(parents=True)
    (new / "sub" / "file.o").write_bytes(b"\x7fELF")
    os.symlink("sub/file.o", new / "link")
    os.mkfifo(new / "pipe")
    changes = tracker.stop()
    assert changes.returned == ["gen", "gen/link", "gen/sub", "gen/sub/empty", "gen/sub/file.o"]
    assert not changes.deleted


def test_what_a_new_directory_holds_is_not_looked_up_in_the_baseline(tmp_path: Path,
                                                                     monkeypatch) -> None:
    # Nothing below a directory the task made existed before. Looking each path up anyway
    # was most of resolving 20,000 new files, in the thread that packs them.
    seed(tmp_path)
    tracker = started_tracker(tmp_path)
    (tmp_path / "gen" / "sub").mkdir(parents=True)
    for i in range(20):
        (tmp_path / "gen" / "sub" / f"f{i}").write_text("x")
    asked: list[str] = []
    real_get = Baseline.get
    monkeypatch.setattr(Baseline, "get",
                        lambda self, rel: asked.append(rel) or real_get(self, rel))
    changes = tracker.stop()
    assert len(changes.returned) == 22  # gen, gen/sub and the files
    assert asked == ["gen"]  # is it new? once, for the directory itself


def test_a_chmod_of_a_directory_returns_it_once_and_the_workspace_itself_never(
        tmp_path: Path) -> None:
    # The watched directory's own event has no name: it must not come back as "src/" beside
    # the parent's "src" (the host refuses a duplicate), and the root's mode is no output.
    seed(tmp_path)

    def task(root: Path) -> None:
        os.chmod(root / "src", 0o700)
        os.chmod(root, 0o750)

    changes, returned, deleted = track(tmp_path, task)
    assert changes.returned == ["src"]
    assert set(changes.returned) == returned and not changes.deleted and not deleted
