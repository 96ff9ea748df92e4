"""A hostile task in a real rootless container: it may ruin its own container, never the host,
the repository, the agent of later tasks or another task's secrets.

Each test plays one class of attack of issue 13 from inside the task, the way an attacker
would, and checks what the host and later tasks see.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from test_faults import BUSYBOX, buildr, hcl_task, need_image

from buildr_podman.cache_root import cache_root

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

GCC = "localhost/buildr-gcc:bookworm"
SECRET = "s3cr3t-capture-me-7f41"

# Attaches to the agent (PID 1) with ptrace: that stops it, for as long as the tracer lives.
TRACER = r"""
cat > tracer.c <<'C'
#include <stdio.h>
#include <sys/ptrace.h>
#include <unistd.h>
int main(void) {
    if (ptrace(PTRACE_ATTACH, 1, 0, 0) != 0) { perror("attach"); return 3; }
    puts("attach=done"); fflush(stdout);
    for (;;) pause();
}
C
gcc -o /tmp/tracer tracer.c && /tmp/tracer"""


def repo(tmp_path: Path, *tasks: str) -> Path:
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "src" / "input.txt").write_text("input\n")
    (root / ".buildr" / "tasks.hcl").write_text("\n".join(tasks))
    return root


# -- 2. the agent cannot be taken over -------------------------------------------------------


def test_a_frozen_agent_ends_its_task_at_the_hosts_deadline(tmp_path: Path) -> None:
    """A task allowed to trace (SYS_PTRACE) stops the agent: its timeout still holds, because
    the host enforces it, and the pod goes."""
    need_image(GCC)
    root = repo(tmp_path, hcl_task(
        "freezer", TRACER, image=GCC,
        extra='  timeout = "5s"\n').replace(
        f'image = "{GCC}" }}', f'image = "{GCC}"\n capabilities {{ add = ["SYS_PTRACE"] }} }}'))
    started = time.monotonic()
    done = buildr(root, "run", "freezer", "--output", "plain", timeout=120)
    took = time.monotonic() - started
    assert "attach=done" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 1, done.stderr
    assert took < 60, f"took {took:.0f} s"
    assert "did not end within its timeout of 5 s" in done.stderr + done.stdout


def test_the_task_cannot_trace_or_read_the_agent(tmp_path: Path) -> None:
    """Same uid as the agent, default capabilities: ptrace and /proc/1 are refused."""
    need_image(GCC)
    script = ("cat /proc/1/environ > /dev/null 2>&1 && echo environ=read "
              "|| echo environ=refused\n" + TRACER + " || echo tracer=refused")
    root = repo(tmp_path, hcl_task("tracer", script, image=GCC, extra='  timeout = "20s"\n'))
    done = buildr(root, "run", "tracer", "--output", "plain", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "environ=refused" in done.stdout
    assert "attach: Operation not permitted" in done.stdout + done.stderr
    assert "tracer=refused" in done.stdout


def bundle_files() -> dict[Path, tuple[int, int]]:
    """(size, mtime) of every file of every cached agent bundle."""
    return {path: (path.stat().st_size, path.stat().st_mtime_ns)
            for path in (cache_root() / "agent").rglob("*") if path.is_file()}


PRIVILEGED_WRITER = """
for where in /.buildr/agent /.buildr/base; do
  mount -o remount,bind,rw $where 2>/dev/null || mount -o remount,rw $where 2>/dev/null
  echo planted > $where/planted && echo "$where=written"
done
echo planted > /.buildr/agent/buildr-agent
echo planted >> /.buildr/base/src/input.txt
echo done"""


@pytest.mark.parametrize("privileges", ["privileged = true",
                                        'capabilities { add = ["SYS_ADMIN"] }'])
def test_privileges_cannot_write_the_agent_or_the_repository(tmp_path: Path,
                                                             privileges: str) -> None:
    need_image()
    root = repo(tmp_path, hcl_task("writer", PRIVILEGED_WRITER).replace(
        f'image = "{BUSYBOX}" }}', f'image = "{BUSYBOX}"\n {privileges} }}'),
        hcl_task("later", "/.buildr/agent/buildr-agent --version; cat src/input.txt"))
    buildr(root, "run", "later", timeout=300)  # the agent is built and cached
    before = bundle_files()
    done = buildr(root, "run", "writer", "later", "-j", "1", "--output", "plain", timeout=300)
    assert "done" in done.stdout, done.stdout + done.stderr
    assert bundle_files() == before, "the task changed the cached agent"
    assert not (root / "planted").exists() and not (root / "src" / "planted").exists()
    assert (root / "src" / "input.txt").read_text() == "input\n"
    assert done.returncode == 0, done.stdout + done.stderr
    assert "buildr-agent" in done.stdout and done.stdout.count("input") >= 1


# -- 4. warm containers carry no task's tricks into another's --------------------------------

PLANT = r"""
rm -f /bin/sh
printf '#!/bin/busybox sh\nenv >> /tmp/captured\nexec /bin/busybox sh "$@"\n' > /bin/sh
chmod 755 /bin/sh
echo planted"""


def test_a_replaced_shell_captures_no_later_tasks_secret(tmp_path: Path) -> None:
    need_image()
    root = repo(
        tmp_path,
        hcl_task("plant", PLANT),
        hcl_task("secretive", "echo secretive ran",
                 extra='  depends_on = ["plant"]\n'
                       '  secret_environment = { TOKEN = env("BUILDR_TEST_TOKEN") }\n'),
        hcl_task("reader", "cat /tmp/captured 2>/dev/null | grep TOKEN || echo nothing=captured"
                 "\necho \"given=$GIVEN\"",
                 extra='  depends_on = ["secretive"]\n'
                       '  environment = { GIVEN = env("BUILDR_TEST_TOKEN") }\n'))
    for _ in range(2):
        done = buildr(root, "-v", "run", "reader", "-j", "1", "--output", "plain",
                      env={"BUILDR_TEST_TOKEN": SECRET})
        assert done.returncode == 0, done.stdout + done.stderr
        assert "secretive ran" in done.stdout and "planted" in done.stdout
        assert "nothing=captured" in done.stdout, done.stdout
        # Another task's secret is masked too, wherever the reader got it.
        assert "given=***" in done.stdout
        assert SECRET not in done.stdout + done.stderr
        log = (root / ".buildr" / "out" / ".logs" / "reader.log").read_text()
        assert SECRET not in log and "given=***" in log


# -- 5. the socket's directory takes nothing from the task -----------------------------------


def test_a_task_cannot_fill_or_keep_anything_in_the_socket_directory(tmp_path: Path) -> None:
    need_image()
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    before = {p.name for p in runtime.iterdir()}
    script = ("head -c 4000000 /dev/zero > /.buildr/sock/fill 2>/dev/null; "
              "mkdir -p /.buildr/sock/kept && touch /.buildr/sock/kept/x "
              "&& chown -R 1000:1000 /.buildr/sock/kept; "
              "ls -l /.buildr/sock/fill | awk '{print \"filled=\" $5}'")
    root = repo(tmp_path, hcl_task("filler", script))
    done = buildr(root, "run", "filler", "--output", "plain")
    assert done.returncode == 0, done.stdout + done.stderr
    # A small tmpfs of the container's own: a few MB do not fit, and nothing reaches the host.
    filled = int(done.stdout.split("filled=")[1].split()[0]) if "filled=" in done.stdout else 0
    assert filled <= 1 << 20, done.stdout
    after = {p.name for p in runtime.iterdir()}
    assert not {name for name in after - before if name.startswith("buildr-agent-")}


def test_clean_removes_a_socket_directory_with_files_of_a_subordinate_uid(
        tmp_path: Path) -> None:
    """Left by an older version, which mounted it into the container: a task chowned its
    files to a uid the user cannot delete as."""
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    leftover = Path(tempfile.mkdtemp(prefix="buildr-agent-", dir=runtime))
    (leftover / "kept").mkdir()
    (leftover / "kept" / "x").write_text("x")
    subprocess.run(["podman", "unshare", "chown", "-R", "1000:1000", str(leftover / "kept")],
                   check=True)
    long_ago = time.time() - 3600
    os.utime(leftover, (long_ago, long_ago))
    done = buildr(tmp_path, "clean")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not leftover.exists(), done.stdout + done.stderr
    assert f"removed agent socket directory {leftover}" in done.stdout


# -- 8. resource bounds ----------------------------------------------------------------------


def with_container(task: str, line: str, image: str = BUSYBOX) -> str:
    """The task's container block with one more line in it."""
    return task.replace(f'image = "{image}" }}', f'image = "{image}"\n    {line}\n  }}')


def test_a_fork_bomb_fails_as_itself_under_its_pids_limit(tmp_path: Path) -> None:
    need_image()
    bomb = "echo limit=$(ulimit -u)\nbomb() { bomb | bomb & }\nbomb\nsleep 2"
    root = repo(tmp_path,
                with_container(hcl_task("bomb", bomb, extra='  timeout = "60s"\n'),
                               "pids_limit = 64"),
                hcl_task("calm", "echo calm=ok"))
    for _ in range(2):
        started = time.monotonic()
        done = buildr(root, "run", "bomb", "calm", "-j", "1", "-k", "--output", "plain",
                      timeout=180)
        assert time.monotonic() - started < 60
        assert done.returncode == 1, done.stdout + done.stderr
        said = done.stdout + done.stderr
        assert "reached its limit of 64 processes" in said, said[-3000:]
        assert "calm=ok" in done.stdout  # the other task of the run is unharmed
