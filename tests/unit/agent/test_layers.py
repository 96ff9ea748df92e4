"""Outputs laid over a workspace (inputs_from), the layered baseline, and undoing a task over
them: the logic in plain directories (tests/integration/test_dependency_outputs.py runs it in
real containers)."""

from __future__ import annotations

import os
from pathlib import Path

from buildr_podman.agent.layers import lay_outputs
from buildr_podman.agent.revert import revert
from buildr_podman.agent.snapshot import Baseline
from buildr_podman.agent.watcher import ChangeTracker


def make(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() if p.is_file() else "<dir>"
            for p in sorted(root.rglob("*"))}


def setup(tmp_path: Path) -> tuple[Path, list[str]]:
    base = make(tmp_path / "base", {"src/a.c": "a", "shared": "base", "hidden/x": "x"})
    first = make(tmp_path / "first", {"gen/config.h": "1", "shared": "first", "hidden": "file"})
    second = make(tmp_path / "second", {"gen/more.h": "2", "shared": "second"})
    workspace = tmp_path / "ws"
    os.system(f"cp -a {base} {workspace}")
    return workspace, [str(base), str(first), str(second)]


def test_later_layers_win_and_a_file_hides_a_directory(tmp_path: Path) -> None:
    workspace, roots = setup(tmp_path)
    lay_outputs(str(workspace), roots[1:])
    expected = {"gen": "<dir>", "gen/config.h": "1", "gen/more.h": "2", "hidden": "file",
                "shared": "second", "src": "<dir>", "src/a.c": "a"}
    assert tree(workspace) == expected
    baseline = Baseline(roots)
    assert baseline.get("hidden/x") is None
    assert baseline.path_of("shared") == os.path.join(roots[2], "shared")
    assert sorted(baseline.under("")) == sorted(expected)


def test_laid_files_come_back_only_when_the_task_changes_them(tmp_path: Path) -> None:
    workspace, roots = setup(tmp_path)
    lay_outputs(str(workspace), roots[1:])
    tracker = ChangeTracker(str(workspace), roots)
    tracker.start()
    (workspace / "gen" / "more.h").write_text("changed")
    (workspace / "shared").write_text("second")  # the same bytes: no change
    (workspace / "gen" / "config.h").unlink()
    changes = tracker.stop()
    assert changes.returned == ["gen/more.h"]
    assert changes.deleted == ["gen/config.h"]
    # Undone, the workspace is the layers merged again, ready for the pod's next task.
    revert(str(workspace), Baseline(roots), changes)
    assert tree(workspace)["gen/more.h"] == "2"
    assert tree(workspace)["gen/config.h"] == "1"


def test_a_removed_directory_comes_back_merged_from_every_layer(tmp_path: Path) -> None:
    workspace, roots = setup(tmp_path)
    lay_outputs(str(workspace), roots[1:])
    before = tree(workspace)
    tracker = ChangeTracker(str(workspace), roots)
    tracker.start()
    os.system(f"rm -rf {workspace / 'gen'}")
    changes = tracker.stop()
    assert changes.deleted == ["gen", "gen/config.h", "gen/more.h"]
    revert(str(workspace), Baseline(roots), changes)
    assert tree(workspace) == before
