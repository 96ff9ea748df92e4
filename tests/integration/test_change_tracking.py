"""Change tracking in a real container: what comes back equals the before/after comparison.

The task itself lists the workspace (type, mode, md5 or link target) before and after the
generated file operations and prints both listings; the truth is computed from them, inside
the same container and filesystem (overlay semantics differ from the host's: a lower
directory cannot be renamed in place, for one). What came back, and the deletions reported,
must match that truth exactly.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

BUSYBOX_IMAGE = "localhost/buildr-busybox:latest"

NAMES = st.sampled_from(["a", "b", "c", "src"])
PATHS = st.lists(NAMES, min_size=1, max_size=4).map("/".join)
DATA = st.text(alphabet="xyz", min_size=0, max_size=8)
OPS = st.one_of(
    st.tuples(st.just("write"), PATHS, DATA),
    st.tuples(st.just("append"), PATHS, DATA.filter(bool)),
    st.tuples(st.just("truncate"), PATHS, st.none()),
    st.tuples(st.just("chmod"), PATHS, st.sampled_from(["755", "600", "644"])),
    st.tuples(st.just("rename"), PATHS, PATHS),
    st.tuples(st.just("delete"), PATHS, st.none()),
    st.tuples(st.just("mkdir"), PATHS, st.none()),
    st.tuples(st.just("symlink"), PATHS, PATHS),
    st.tuples(st.just("file_to_dir"), PATHS, st.none()),
    st.tuples(st.just("dir_to_file"), PATHS, DATA),
)


def shell(op: tuple) -> str:
    kind, path, arg = op
    p, q = shlex.quote(path), shlex.quote(str(arg))
    parent = f'mkdir -p "$(dirname {p})"'
    return {
        "write": f"{parent} && printf %s {q} > {p}",
        "append": f"printf %s {q} >> {p}",
        "truncate": f"[ -f {p} ] && : > {p}",
        "chmod": f"[ -f {p} ] && [ ! -L {p} ] && chmod {arg} {p}",
        "rename": f'mkdir -p "$(dirname {q})" && mv {p} {q}',
        "delete": f"rm -rf {p}",
        "mkdir": f"mkdir -p {p}/x/y",
        "symlink": f"{parent} && ln -s {q} {p}",
        "file_to_dir": f"[ -f {p} ] && rm {p} && mkdir {p}",
        "dir_to_file": f"[ -d {p} ] && [ ! -L {p} ] && rm -rf {p} && printf %s {q} > {p}",
    }[kind] + " 2>/dev/null; true"


LISTING = (
    'find . -path ./.buildr -prune -o ! -path . -print | sort | while IFS= read -r p; do '
    'if [ -L "$p" ]; then echo "L|$p|$(readlink "$p")"; '
    'elif [ -d "$p" ]; then echo "D|$p|$(stat -c %a "$p")|$(ls -A "$p" | wc -l)"; '
    'else echo "F|$p|$(stat -c %a "$p")|$(md5sum < "$p" | cut -d" " -f1)"; fi; done'
)


def parse_listing(text: str) -> dict[str, tuple]:
    entries = {}
    for line in text.splitlines():
        kind, path, *rest = line.split("|")
        entries[path.removeprefix("./")] = (kind, *rest)
    return entries


def truth(before: dict, after: dict) -> tuple[set, set]:
    returned = set()
    for rel, now in after.items():
        old = before.get(rel)
        if now[0] == "D":
            if old is None or old[0] != "D" or old[1] != now[1]:  # new, or its mode changed
                returned.add(rel)
        elif old != now:
            returned.add(rel)
    return returned, set(before) - set(after)


def leaves(paths: set[str]) -> set[str]:
    """The paths with none of the others below them: what a returned tree shows as leaves."""
    return {p for p in paths if not any(q.startswith(p + "/") for q in paths)}


def came_back(out: Path) -> set[str]:
    """Leaves of the returned tree: files, symlinks and empty directories."""
    if not out.exists():
        return set()
    return {str(p.relative_to(out)) for p in out.rglob("*")
            if p.is_symlink() or not p.is_dir() or not any(p.iterdir())}


def seed(root: Path) -> None:
    (root / ".buildr").mkdir(parents=True)
    for rel, text in {"a/x": "1", "a/b/y": "22", "src/main.c": "int main;", "c": "top"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    os.symlink("a/x", root / "b")


@pytest.fixture(scope="module")
def image() -> str:
    if subprocess.run(["podman", "image", "exists", BUSYBOX_IMAGE], check=False).returncode:
        pytest.skip(f"image {BUSYBOX_IMAGE} is missing: run scripts/setup.sh")
    return BUSYBOX_IMAGE


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=1, max_size=12))
def test_random_file_operations_come_back_exactly(image: str, tmp_path_factory, ops) -> None:
    operations = "\n".join(shell(op) for op in ops)
    script = f"echo @@BEFORE\n{LISTING}\n{operations}\necho @@AFTER\n{LISTING}"
    project = tmp_path_factory.mktemp("track") / "project"
    seed(project)
    (project / ".buildr" / "t.hcl").write_text(
        f'task "script" "t" {{\n  container {{\n    image = "{image}"\n  }}\n'
        f"  script = <<-EOT\n{script}\n  EOT\n}}\n")
    run = subprocess.run([sys.executable, "-m", "buildr_podman", "-v", "run", "--output",
                          "plain", "t"], cwd=project, capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    listing = run.stdout.split("@@BEFORE\n", 1)[1]
    before_text, after_text = listing.split("@@AFTER\n", 1)
    after = parse_listing(after_text)
    returned, deleted = truth(parse_listing(before_text), after)
    out = project / ".buildr" / "out" / "t"
    assert came_back(out) == leaves(returned), operations
    for rel in returned:  # directories the task made come back with their own mode
        if after[rel][0] == "D":
            assert f"{(out / rel).stat().st_mode & 0o777:o}" == after[rel][1], (rel, operations)
    reported = set(re.findall(r"t: deleted (.+)", run.stderr))
    assert reported == deleted, operations


def run_task(project: Path, script: str, image: str, **env: str) -> subprocess.CompletedProcess:
    (project / ".buildr" / "net.hcl").write_text(
        f'task "script" "net" {{\n  container {{\n    image = "{image}"\n  }}\n'
        f"  script = <<-EOT\n{script}\n  EOT\n}}\n")
    return subprocess.run([sys.executable, "-m", "buildr_podman", "-v", "run", "--output",
                           "plain", "net"], cwd=project, capture_output=True, text=True,
                          timeout=600, check=False, env={**os.environ, **env})


# 7,000 files in an existing directory make ~21,000 events, more than the kernel queue's
# 16,384; 7,000 more land in directories created and filled at once.
FILL = ("i=0; while [ $i -lt 7000 ]; do mkdir -p src/gen/d$((i % 50)); "
        "echo $i > src/gen/d$((i % 50))/f$i; echo $i > a/f$i; i=$((i + 1)); done; rm c")


def expected_fill() -> set[str]:
    return ({f"src/gen/d{i % 50}/f{i}" for i in range(7000)} | {f"a/f{i}" for i in range(7000)})


@pytest.mark.parametrize(("knob", "reason"), [
    ({"BUILDR_AGENT_READER_DELAY": "8"}, "the inotify queue overflowed"),
    ({"BUILDR_AGENT_MAX_WATCHES": "2"}, "the inotify watch limit was reached"),
    ({}, None),
])
def test_every_safety_net_gives_the_exact_result(image: str, tmp_path: Path, knob: dict,
                                                  reason: str | None) -> None:
    """A real queue overflow (the reader stalls while 9,000+ events pour in), the watch limit,
    and the plain path with directories created and filled at once: all exact."""
    project = tmp_path / "project"
    seed(project)
    run = run_task(project, FILL, image, **knob)
    assert run.returncode == 0, run.stderr
    out = project / ".buildr" / "out" / "net"
    assert came_back(out) == expected_fill()
    assert (out / "a" / "f6999").read_text() == "6999\n"
    assert re.findall(r"net: deleted (.+)", run.stderr) == ["c"]
    tracking = re.search(r"changes found by (.+)", run.stderr).group(1)
    assert tracking == (f"rescan: {reason}" if reason else "inotify")


def write_back_task(project: Path, name: str, script: str, image: str) -> None:
    (project / ".buildr" / f"{name}.hcl").write_text(
        f'task "script" "{name}" {{\n  container {{\n    image = "{image}"\n  }}\n'
        f"  write_back = true\n  script = <<-EOT\n{script}\n  EOT\n}}\n")


def test_write_back_applies_changes_and_deletions_to_the_repository(image: str,
                                                                    tmp_path: Path) -> None:
    project = tmp_path / "project"
    seed(project)
    write_back_task(project, "fmt", "echo formatted > src/main.c\nmkdir -p gen && "
                    "echo new > gen/x.h\nrm c", image)
    write_back_task(project, "broken", "echo half > a/x\nexit 3", image)
    run = subprocess.run([sys.executable, "-m", "buildr_podman", "-v", "run", "--output",
                          "plain", "-j", "1", "fmt"], cwd=project, capture_output=True,
                         text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    assert (project / "src" / "main.c").read_text() == "formatted\n"
    assert (project / "gen" / "x.h").read_text() == "new\n"
    assert not (project / "c").exists()
    assert not (project / ".buildr" / "out" / "fmt").exists()
    failed = subprocess.run([sys.executable, "-m", "buildr_podman", "run", "--output", "plain",
                             "broken"], cwd=project, capture_output=True, text=True,
                            timeout=300, check=False)
    assert failed.returncode == 1
    assert (project / "a" / "x").read_text() == "1"  # a failed task never writes back
    failed_output = project / ".buildr" / "out" / ".failed" / "broken"
    assert (failed_output / "a" / "x").read_text() == "half\n"  # to inspect, beside the good one


def test_write_back_turns_a_directory_into_a_file_and_a_file_into_a_directory(
        image: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    seed(project)
    write_back_task(project, "swap", "rm -rf a && echo now a file > a\n"
                    "rm c && mkdir c && echo in > c/inside && chmod 750 c", image)
    run = subprocess.run([sys.executable, "-m", "buildr_podman", "run", "--output", "plain",
                          "swap"], cwd=project, capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert (project / "a").read_text() == "now a file\n"
    assert (project / "c" / "inside").read_text() == "in\n"
    assert (project / "c").stat().st_mode & 0o777 == 0o750
    assert os.readlink(project / "b") == "a/x"  # untouched: a symlink that now dangles
