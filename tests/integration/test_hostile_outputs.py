"""A hostile task, in real rootless Podman: what it plants in the repository and its out dir
never makes the host read or write outside them, on this run or the next ones (issue 13)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from test_faults import buildr, hcl_task, need_image

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

# With write_back and no input_mapping the whole repository is the task's to change: it plants
# symlinks to outside files where the host writes on every run (its own log, another task's
# output), overwrites another task's returned binary and deletes the configuration.
PLANTER = """\
ln -sf "$OUTSIDE/bashrc" .buildr/out/planter.log
mkdir -p .buildr/out/victim && echo evil > .buildr/out/victim/bin
ln -s "$OUTSIDE" .buildr/out/victim/dir
rm -f .buildr/tasks.hcl
echo fine > src/written.txt"""


def repo(tmp_path: Path, outside: Path) -> Path:
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / "src").mkdir()
    (root / ".buildr" / "tasks.hcl").write_text("\n".join([
        hcl_task("planter", PLANTER, extra=f'  write_back = true\n'
                                           f'  environment = {{ OUTSIDE = "{outside}" }}\n'),
        hcl_task("victim", "mkdir -p dir && echo built > bin && echo in > dir/f"),
    ]))
    return root


def test_a_write_back_task_cannot_plant_links_or_change_other_outputs(tmp_path: Path) -> None:
    need_image()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "bashrc").write_text("the user's shell start-up\n")
    root = repo(tmp_path, outside)
    config = (root / ".buildr" / "tasks.hcl").read_text()
    assert buildr(root, "run", "--output", "plain", "victim").returncode == 0
    for attempt in range(3):  # most bugs show on the second run
        run = buildr(root, "run", "--output", "plain", "planter", "victim")
        assert run.returncode == 0, run.stderr
        assert (outside / "bashrc").read_text() == "the user's shell start-up\n", attempt
        assert sorted(p.name for p in outside.iterdir()) == ["bashrc"], attempt
        assert (root / ".buildr" / "tasks.hcl").read_text() == config
        assert (root / ".buildr" / "out" / "victim" / "bin").read_text() == "built\n"
        assert not (root / ".buildr" / "out" / "victim" / "dir").is_symlink()
        log = root / ".buildr" / "out" / "planter.log"
        assert not log.is_symlink() and "planter ok" in log.read_text()
        assert (root / "src" / "written.txt").read_text() == "fine\n"
        said = run.stdout + run.stderr
        assert re.search(r"planter: warning: not written back: \d+ changes inside \.buildr/ or "
                         r"the out dir, which a task never changes \('\.buildr/", said), said


def test_a_log_planted_as_a_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    """Left by an older version, or by hand: the host's own files are never written through
    a link in the out dir."""
    need_image()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "bashrc").write_text("kept\n")
    root = repo(tmp_path, outside)
    (root / ".buildr" / "out").mkdir()
    os.symlink(outside / "bashrc", root / ".buildr" / "out" / "victim.log")
    os.symlink(outside / "bashrc", root / ".buildr" / "out" / "junit.xml")
    assert buildr(root, "run", "--output", "plain", "victim").returncode == 0
    assert (outside / "bashrc").read_text() == "kept\n"
    assert "victim ok" in (root / ".buildr" / "out" / "victim.log").read_text()
