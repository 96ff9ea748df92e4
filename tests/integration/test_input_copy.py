"""`container { inputs = "copy" }`: the inputs copied in through the agent instead of mounted
under an overlay. A task must see, and give back, exactly what it would with the overlay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_faults import need_image

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

IMAGE = "localhost/buildr-busybox:latest"
SCRIPT = """\
cat src/data.txt src/link
ls -A .buildr/out | wc -l
ls -l src/run.sh | cut -c1-10
echo more >> src/data.txt
echo new > src/new.txt
rm src/sub/deep.txt
"""


def buildr(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildr_podman", *args], cwd=root,
                          capture_output=True, text=True, timeout=300, check=False)


def task(name: str, inputs: str, script: str, mapping: str = "") -> str:
    return (f'task "script" "{name}" {{\n  container {{\n    image = "{IMAGE}"\n'
            f'    inputs = "{inputs}"\n  }}\n{mapping}  script = <<-EOT\n{script}\n  EOT\n}}\n')


def make_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "data.txt").write_text("data\n")
    (root / "src" / "sub" / "deep.txt").write_text("deep\n")
    (root / "src" / "run.sh").write_text("#!/bin/sh\n")
    (root / "src" / "run.sh").chmod(0o755)
    (root / "src" / "link").symlink_to("data.txt")
    (root / ".buildr" / "out" / "dep").mkdir(parents=True)
    (root / ".buildr" / "out" / "dep" / "result.txt").write_text("an earlier output\n")
    return root


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_copied_inputs_give_what_the_overlay_gives(tmp_path: Path) -> None:
    need_image()
    root = make_repo(tmp_path)
    (root / ".buildr" / "tasks.hcl").write_text(task("mounted", "mount", SCRIPT)
                                                + task("copied", "copy", SCRIPT))
    before = tree(root / "src")
    results = {}
    for name in ("mounted", "copied"):
        result = buildr(root, "run", name, "--output", "json")
        assert result.returncode == 0, result.stderr
        results[name] = [json.loads(line) for line in result.stdout.splitlines()]
    outputs = {name: [e["line"] for e in events if e["event"] == "output"]
               for name, events in results.items()}
    assert outputs["copied"] == outputs["mounted"] == [
        "data", "data", "0", "-rwxr-xr-x"], "the out dir is no input"
    finished = {name: next(e for e in events if e["event"] == "task_finished")
                for name, events in results.items()}
    assert finished["copied"]["deleted_paths"] == finished["mounted"]["deleted_paths"] == [
        "src/sub/deep.txt"]
    out = root / ".buildr" / "out"
    assert tree(out / "copied") == tree(out / "mounted") == {
        "src/data.txt": b"data\nmore\n", "src/new.txt": b"new\n"}
    assert tree(root / "src") == before, "the repository itself is never written"


def test_a_mapping_and_a_warm_second_task_start_from_the_copy(tmp_path: Path) -> None:
    need_image()
    root = make_repo(tmp_path)
    mapping = '  input_mapping = { "src" = "code" }\n'
    first = task("first", "copy", "echo changed > code/data.txt\necho x > code/x.txt", mapping)
    second = task("second", "copy", "cat code/data.txt; ls code", mapping)
    (root / ".buildr" / "tasks.hcl").write_text(first + second)
    result = buildr(root, "-v", "run", "first", "second", "-j", "1", "--output", "plain")
    assert result.returncode == 0, result.stderr
    assert "second: pod" in result.stderr and "reused after 1 tasks" in result.stderr
    assert result.stdout.splitlines() == ["data", "data.txt", "link", "run.sh", "sub"]
    assert tree(root / ".buildr" / "out" / "first") == {"code/data.txt": b"changed\n",
                                                       "code/x.txt": b"x\n"}
    assert os.readlink(root / "src" / "link") == "data.txt"


def test_an_unreadable_input_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    need_image()
    root = make_repo(tmp_path)
    secret = root / "src" / "secret.txt"
    secret.write_text("no\n")
    secret.chmod(0)
    (root / ".buildr" / "tasks.hcl").write_text(task("copied", "copy", "cat src/data.txt"))
    result = buildr(root, "run", "copied", "--output", "plain")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "secret.txt" in line]
    assert len(errors) == 1 and "make them readable, or use inputs = \"mount\"" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (root / ".buildr" / "out" / "copied").exists()


@pytest.mark.parametrize("inputs", ["mount", "copy"])
def test_a_mapping_that_leads_out_of_the_repository_starts_no_pod(tmp_path: Path,
                                                                   inputs: str) -> None:
    need_image()
    root = make_repo(tmp_path)
    (tmp_path / "private").mkdir()
    (root / "escape").symlink_to(tmp_path / "private")
    mapping = '  input_mapping = { "escape" = "code" }\n'
    (root / ".buildr" / "tasks.hcl").write_text(task("out", inputs, "ls code", mapping))
    result = buildr(root, "run", "out", "--output", "plain")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "leads out of the repository" in line]
    assert len(errors) == 1 and "(.buildr/tasks.hcl:1)" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (root / ".buildr" / "out" / "out").exists()
