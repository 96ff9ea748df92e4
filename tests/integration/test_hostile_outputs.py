"""A hostile task, in real rootless Podman: what it plants in the repository and its out dir
never makes the host read or write outside them, on this run or the next ones (issue 13)."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_faults import Running, buildr, hcl_task, need_image

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

# With write_back and no input_mapping the whole repository is the task's to change: it plants
# symlinks to outside files where the host writes on every run (its own log, another task's
# output), overwrites another task's returned binary and deletes the configuration.
# The out dir is hidden from the container (an empty read-only directory): these fail there,
# and the host would not follow them if they did not.
PLANTER = """\
mkdir -p .buildr/out/.logs; ln -sf "$OUTSIDE/bashrc" .buildr/out/.logs/planter.log
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
        log = root / ".buildr" / "out" / ".logs" / "planter.log"
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
    for where in (".logs", ".reports"):
        (root / ".buildr" / "out" / where).mkdir(parents=True)
    os.symlink(outside / "bashrc", root / ".buildr" / "out" / ".logs" / "victim.log")
    os.symlink(outside / "bashrc", root / ".buildr" / "out" / ".reports" / "junit.xml")
    assert buildr(root, "run", "--output", "plain", "victim").returncode == 0
    assert (outside / "bashrc").read_text() == "kept\n"
    assert "victim ok" in (root / ".buildr" / "out" / ".logs" / "victim.log").read_text()


def test_an_out_dir_among_the_sources_never_replaces_them(tmp_path: Path) -> None:
    """out_dir = "src" and a task named `lib`: the repository's src/lib is the user's, so the
    task's output is refused with one line, run after run; the root, .git and .buildr are
    refused as out dirs before anything runs."""
    need_image()
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / "src" / "lib").mkdir(parents=True)
    (root / "src" / "lib" / "code.c").write_text("the user's\n")
    tasks = hcl_task("lib", "echo built > lib.o") + hcl_task("fresh", "echo new > f")
    (root / ".buildr" / "tasks.hcl").write_text('buildr {\n  out_dir = "src"\n}\n' + tasks)
    for _ in range(2):
        run = buildr(root, "run", "--output", "plain", "-k", "lib", "fresh")
        assert run.returncode == 1
        said = run.stdout + run.stderr
        assert re.search(r"lib failed .*cannot replace .*/src/lib with the task's output: "
                         r"buildr-podman did not make it, so it may be yours; move it away, or "
                         r"choose an out_dir of its own", said), said
        assert sorted(p.name for p in (root / "src" / "lib").iterdir()) == ["code.c"]
        assert (root / "src" / "fresh" / "f").read_text() == "new\n"  # its own: replaced
    for out_dir, why in ((".", "is the repository root"), (".git", "lies inside .git"),
                         (".buildr", "holds the configuration")):
        (root / ".buildr" / "tasks.hcl").write_text(
            f'buildr {{\n  out_dir = "{out_dir}"\n}}\n' + tasks)
        run = buildr(root, "run", "--output", "plain", "lib")
        assert run.returncode == 2 and why in run.stderr, run.stderr
        assert run.stderr.count("\n") == 1


HOSTILE_OUTPUT = (b"\x1bc\xc2\x9b2J\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"
                  b"\x1b]0;owned\x07\x1b[?1049h\x1b[31mred\x1b[0m plain\n")


def on_a_terminal(root: Path, *args: str, timeout: float = 300) -> bytes:
    """Runs the CLI with stdin, stdout and stderr on a new pseudo-terminal (so that `auto`
    picks the rich display) and returns every byte that reached the terminal."""
    # A user's terminal: CI=true, which CI sets for the whole suite, makes `auto` pick plain
    # lines even on a terminal, and the rich display would go untested there.
    environment = {key: value for key, value in os.environ.items() if key != "CI"}
    master, slave = os.openpty()
    process = subprocess.Popen([sys.executable, "-m", "buildr_podman", *args], cwd=root,
                               stdin=slave, stdout=slave, stderr=slave,
                               env={**environment, "TERM": "xterm-256color"})
    os.close(slave)
    seen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last holder of the terminal's other side is gone
                break
            if not data:
                break
            seen += data
    finally:
        os.close(master)
        process.wait(timeout=60)
    return bytes(seen)


def test_the_rich_display_sanitizes_what_a_task_prints_and_plain_passes_it(
        tmp_path: Path) -> None:
    need_image()
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "src" / "hostile.txt").write_bytes(HOSTILE_OUTPUT)
    (root / ".buildr" / "tasks.hcl").write_text(hcl_task("show", "cat src/hostile.txt"))
    shown = on_a_terminal(root, "run", "show")
    assert b"click me" in shown and b"red" in shown, shown
    for forbidden in (b"\x1bc", b"\xc2\x9b", b"\x1b]8;", b"evil.example", b"\x1b]0;",
                      b"\x1b[?1049h"):
        assert forbidden not in shown, (forbidden, shown)
    plain = subprocess.run([sys.executable, "-m", "buildr_podman", "run", "--output", "plain",
                            "show"], cwd=root, capture_output=True, timeout=300, check=False)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == HOSTILE_OUTPUT  # byte for byte, like make


def write_back_repo(tmp_path: Path, script: str) -> Path:
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "src" / "main.c").write_text("int main;\n")
    (root / "a").mkdir()
    (root / "a" / "x").write_text("1\n")
    (root / ".buildr" / "tasks.hcl").write_text(
        hcl_task("fmt", script, extra="  write_back = true\n"))
    return root


def test_an_edit_saved_while_the_task_ran_is_never_overwritten(tmp_path: Path) -> None:
    need_image()
    root = write_back_repo(tmp_path, "echo up\nsleep 4\necho formatted > src/main.c\n"
                                     "echo new > src/other.c\nrm a/x")
    run = Running(root, "run", "fmt")
    run.wait_for_line("up")
    (root / "src" / "main.c").write_text("int main; /* the user's edit */\n")
    done = run.finish()
    assert done.returncode == 1
    assert re.search(r"fmt failed .*not written back: 1 paths changed in the repository while "
                     r"the task ran \('src/main\.c'\); nothing was applied; the task's changes "
                     r"are in .*\.buildr/out/fmt", done.stderr), done.stderr
    assert (root / "src" / "main.c").read_text() == "int main; /* the user's edit */\n"
    assert not (root / "src" / "other.c").exists() and (root / "a" / "x").read_text() == "1\n"
    assert (root / ".buildr" / "out" / "fmt" / "src" / "main.c").read_text() == "formatted\n"
    again = buildr(root, "run", "--output", "plain", "fmt")  # nothing edited meanwhile: applied
    assert again.returncode == 0, again.stderr
    assert (root / "src" / "main.c").read_text() == "formatted\n"
    assert not (root / "a" / "x").exists()


def test_a_write_back_that_fails_half_way_changes_nothing(tmp_path: Path) -> None:
    """ro/ is read-only in the repository: the task's a/x was already in place when ro/y
    could not be; a/x is put back as it was, and the line says so."""
    need_image()
    root = write_back_repo(tmp_path, "echo 2 > a/x\necho mine > ro/y")
    (root / "ro").mkdir()
    (root / "ro" / "y").write_text("old\n")
    (root / "ro").chmod(0o555)
    try:
        run = buildr(root, "run", "--output", "plain", "fmt")
        assert run.returncode == 1
        assert re.search(r"cannot write back ro/y: Permission denied; the repository is as it "
                         r"was; the task's changes are in", run.stderr), run.stderr
        assert (root / "a" / "x").read_text() == "1\n"
        assert (root / "ro" / "y").read_text() == "old\n"
        assert [p.name for p in (root / ".buildr").iterdir() if p.name.startswith(".")] == []
    finally:
        (root / "ro").chmod(0o755)


RACER = """\
if [ "$PHASE" = 1 ]; then
  for d in $(seq 100 499); do mkdir a$d && (cd a$d && seq 1 100 | xargs touch); done
  ln -s "$OUTSIDE" x
else
  sleep 1; mkdir x && echo "the task's content" > x/planted
fi"""


def test_the_j2_input_copy_race_never_writes_outside(tmp_path: Path) -> None:
    """Issue 13's race, in real containers: `racer`'s first output holds 40,000 files in
    a100..a499 and then `x -> OUTSIDE`; in the second run, with -j 2, `copier` (inputs =
    "copy") walks that output while racer's new one (a real x/ holding a file) replaces it.
    A copy by path made the link `x` in the workspace, spent seconds on a100..a499, then
    entered the new x/ and wrote `planted` through the link into OUTSIDE."""
    need_image()
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(
        hcl_task("racer", RACER, extra=f'  environment = {{ OUTSIDE = "{outside}", '
                                       f'PHASE = env("PHASE", "1") }}\n')
        + 'task "script" "copier" {\n  container {\n    image = "localhost/buildr-busybox:'
          'latest"\n    inputs = "copy"\n  }\n  script = "ls .buildr/out/racer | wc -l"\n}\n')
    first = buildr(root, "run", "--output", "plain", "racer")
    assert first.returncode == 0, first.stderr
    assert os.readlink(root / ".buildr" / "out" / "racer" / "x") == str(outside)
    second = buildr(root, "run", "--output", "plain", "-j", "2", "racer", "copier",
                    env={"PHASE": "2"})
    assert second.returncode == 0, second.stderr
    assert list(outside.iterdir()) == []
    assert (root / ".buildr" / "out" / "racer" / "x" / "planted").is_file()
