"""Change tracking in a real container: what comes back equals the before/after comparison.

Each generated script runs twice: on the host with busybox, in a copy of the project (the
truth, compared before and after), and as a task in the busybox image through the whole
product. The files that came back, and the deletions reported, must match the truth exactly.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

BUSYBOX_IMAGE = "localhost/buildr-busybox:latest"
HOST_BUSYBOX = shutil.which("busybox") or "/bin/busybox"

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


def state(root: Path, skip: Path | None = None) -> dict[str, tuple]:
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        if skip and (base == skip or skip in base.parents):
            continue
        for name in dirnames + filenames:
            path = base / name
            if skip and (path == skip or skip in path.parents):
                continue
            info = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                result[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                result[rel] = ("dir", not os.listdir(path), stat.S_IMODE(info.st_mode))
            else:
                result[rel] = ("file", path.read_bytes(), stat.S_IMODE(info.st_mode))
    return result


def truth(before: dict, after: dict) -> tuple[dict, set]:
    returned = {}
    for rel, now in after.items():
        old = before.get(rel)
        if now[0] == "dir":
            if now[1] and (old is None or old[0] != "dir" or old[2] != now[2]):
                returned[rel] = now
        elif old != now:
            returned[rel] = now
    return returned, set(before) - set(after)


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
    if not os.path.exists(HOST_BUSYBOX):
        pytest.skip("busybox is not installed on the host (Debian: busybox-static)")
    return BUSYBOX_IMAGE


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=1, max_size=12))
def test_random_file_operations_come_back_exactly(image: str, tmp_path_factory, ops) -> None:
    script = "\n".join(shell(op) for op in ops)
    work = tmp_path_factory.mktemp("track")
    project, expected_tree = work / "project", work / "expected"
    seed(project)
    (project / ".buildr" / "t.hcl").write_text(
        f'task "script" "t" {{\n  container {{\n    image = "{image}"\n  }}\n'
        f"  script = <<-EOT\n{script}\n  EOT\n}}\n")
    shutil.copytree(project, expected_tree, symlinks=True)
    before = state(project, skip=project / ".buildr")
    subprocess.run([HOST_BUSYBOX, "sh", "-c", script], cwd=expected_tree, check=True)
    returned, deleted = truth(before, state(expected_tree, skip=expected_tree / ".buildr"))

    run = subprocess.run([sys.executable, "-m", "buildr_podman", "-v", "run", "t"], cwd=project,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    out = project / ".buildr" / "out" / "t"
    came_back = state(out) if out.exists() else {}
    # Directories that only hold returned files come back implicitly; compare leaves.
    leaves = {rel: v for rel, v in came_back.items() if v[0] != "dir" or v[1]}
    assert leaves == returned, script
    reported = set(re.findall(r"buildr: t: deleted (.+)", run.stderr))
    assert reported == deleted, script
