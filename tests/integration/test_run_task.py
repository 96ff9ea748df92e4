"""`buildr-podman run` end to end: real rootless Podman, real images, real agent, real inotify."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_faults import need_image

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"
GCC_IMAGE = "localhost/buildr-gcc:bookworm"
BUSYBOX_IMAGE = "localhost/buildr-busybox:latest"


def buildr(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildr_podman", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("out"))
    return root


def write_task(root: Path, name: str, image: str, script: str) -> None:
    (root / ".buildr" / f"{name}.hcl").write_text(
        f'task "script" "{name}" {{\n  container {{\n    image = "{image}"\n  }}\n'
        f"  script = <<-EOT\n{script}\n  EOT\n}}\n")


def test_compiled_program_nested_dirs_modes_and_symlinks_come_back(project: Path) -> None:
    need_image(GCC_IMAGE)
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    result = buildr("run", "hello", cwd=project)
    assert result.returncode == 0, result.stderr
    out = project / ".buildr" / "out" / "hello"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "hello", "latest", "reports", "reports/nested", "reports/nested/deeper",
        "reports/nested/deeper/build.txt", "run-hello.sh"]
    binary = out / "hello"
    assert binary.stat().st_mode & 0o111, "the compiled program must stay executable"
    ran = subprocess.run([str(out / "run-hello.sh")], capture_output=True, text=True, check=True)
    assert ran.stdout == "Hello from a rootless container\n"
    assert os.readlink(out / "latest") == "hello"
    assert stat.S_IMODE((out / "run-hello.sh").stat().st_mode) == 0o755
    assert (out / "reports/nested/deeper/build.txt").read_text().startswith("built by 12.")
    for path in out.rglob("*"):
        assert path.lstat().st_uid == os.getuid(), f"{path} is not owned by the user"
    # The repository itself is untouched: the task wrote into its copy-on-write layer.
    assert {p: p.read_bytes() for p in project.rglob("*")
            if p.is_file() and out.parent not in p.parents} == before


def test_a_failing_task_exits_1_and_shows_its_exit_code(project: Path) -> None:
    need_image(BUSYBOX_IMAGE)
    write_task(project, "broken", BUSYBOX_IMAGE, "echo about to fail\nexit 7")
    result = buildr("run", "broken", cwd=project)
    assert result.returncode == 1
    assert "about to fail" in result.stdout
    assert "broken failed with exit code 7" in result.stderr


def test_the_busybox_image_without_libc_works(project: Path) -> None:
    need_image(BUSYBOX_IMAGE)
    result = buildr("run", "busybox", cwd=project)
    assert result.returncode == 0, result.stderr
    note = project / ".buildr/out/busybox/out/a/b/note.txt"
    assert note.read_text().startswith("no libc here: ")
    assert "libc" not in note.read_text().removeprefix("no libc here: ")


def test_output_streams_and_untouched_files_stay_home(project: Path) -> None:
    need_image(BUSYBOX_IMAGE)
    write_task(project, "touchy", BUSYBOX_IMAGE,
               "cat src/hello.c > /dev/null\necho to-stdout\necho to-stderr >&2\n"
               "echo changed >> Makefile")
    result = buildr("run", "touchy", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "to-stdout" in result.stdout and "to-stderr" in result.stderr
    out = project / ".buildr/out/touchy"
    assert sorted(p.name for p in out.iterdir()) == ["Makefile"]
    assert (out / "Makefile").read_text().endswith("changed\n")
    assert not (project / "Makefile").read_text().endswith("changed\n")


def test_a_missing_image_is_one_clear_line(project: Path) -> None:
    write_task(project, "ghost", "localhost/no-such-image:1", "true")
    result = buildr("run", "ghost", cwd=project)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "localhost/no-such-image:1" in lines[-1] and "is not here" in lines[-1]
    assert "Traceback" not in result.stderr


def test_list_and_configuration_errors(project: Path) -> None:
    listed = buildr("list", cwd=project)
    assert listed.returncode == 0
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["busybox", "hello"]
    unknown = buildr("run", "nope", cwd=project)
    assert unknown.returncode == 2
    assert "no task named 'nope'" in unknown.stderr


def test_a_rewrite_with_the_same_bytes_does_not_come_back(project: Path) -> None:
    need_image(BUSYBOX_IMAGE)
    write_task(project, "rewrite", BUSYBOX_IMAGE,
               "cp Makefile /tmp/m && cat /tmp/m > Makefile\ntouch src/hello.c\n"
               "echo new > src/new.txt")
    result = buildr("-v", "run", "rewrite", cwd=project)
    assert result.returncode == 0, result.stderr
    out = project / ".buildr/out/rewrite"
    assert [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()] == ["src/new.txt"]


def test_directories_the_task_made_come_back_with_their_modes_and_mtimes(project: Path) -> None:
    need_image(BUSYBOX_IMAGE)
    write_task(project, "dirs", BUSYBOX_IMAGE,
               "mkdir -p out/private out/shared/ro\necho key > out/private/k\n"
               "echo doc > out/shared/ro/d\nchmod 700 out/private\nchmod 555 out/shared/ro\n"
               "chmod 750 out/shared\ntouch -d '2001-02-03 04:05:06' out/private out/shared/ro")
    result = buildr("run", "dirs", cwd=project)
    assert result.returncode == 0, result.stderr
    out = project / ".buildr/out/dirs/out"
    modes = {rel: stat.S_IMODE((out / rel).stat().st_mode)
             for rel in ("private", "shared", "shared/ro")}
    assert modes == {"private": 0o700, "shared": 0o750, "shared/ro": 0o555}
    for rel in ("private", "shared/ro"):
        assert (out / rel).stat().st_mtime == 981173106.0  # 2001-02-03 04:05:06 UTC
    assert (out / "shared/ro/d").read_text() == "doc\n"
