"""Tasks that run as another user (`container { user = "UID:GID" }`): the workspace and a HOME
are theirs to write, with mounted and copied inputs, in a warm pod too; what comes back still
belongs to the invoking user."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_faults import buildr, need_image, tree

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

IMAGE = "localhost/buildr-busybox:latest"
WORK = """\
set -e
id -u > uid.txt
echo more >> src/input.txt
echo changed > gen/id.txt
mkdir -p build/obj && echo o > build/obj/a.o
mkdir -p "$HOME/.cache" && echo cached >> "$HOME/.cache/c" && cat "$HOME/.cache/c" > home.txt
rm src/remove-me.txt
"""


def config(inputs: str) -> str:
    container = (f'  container {{\n    image  = "{IMAGE}"\n    inputs = "{inputs}"\n'
                 '    user   = "1000:1000"\n  }\n')
    work = "".join(f'''
task "script" "{name}" {{
{container}  inputs_from = ["gen"]
  script      = <<-EOT
{WORK}
  EOT
}}
''' for name in ("work", "work2"))
    return f'''
task "script" "gen" {{
{container}  script = "mkdir -p gen; id -u > gen/id.txt"
}}
{work}'''


@pytest.mark.parametrize("inputs", ["mount", "copy"])
def test_a_non_root_task_writes_its_workspace_and_home(tmp_path: Path, inputs: str) -> None:
    need_image(IMAGE)
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(config(inputs))
    (root / "src").mkdir()
    (root / "src" / "input.txt").write_text("repo\n")
    (root / "src" / "remove-me.txt").write_text("x\n")
    out = root / ".buildr" / "out"
    expected = {"uid.txt": "1000\n", "src/input.txt": "repo\nmore\n", "gen/id.txt": "changed\n",
                "build/obj/a.o": "o\n", "home.txt": "cached\n"}
    for attempt in range(3):
        # work2 runs in work's pod after it: reset, handed over again, a fresh HOME.
        result = buildr(root, "-v", "run", "-j", "1", "work", "work2", "--output", "plain")
        assert result.returncode == 0, (attempt, result.stderr)
        assert "work2: pod" in result.stderr and "reused after 1 tasks" in result.stderr
        assert tree(out / "gen") == {"gen/id.txt": "1000\n"}
        for name in ("work", "work2"):
            assert tree(out / name) == expected, (attempt, name)
            owners = {p.stat().st_uid for p in (out / name).rglob("*")}
            assert owners == {os.getuid()}, "returned files belong to the invoking user"
    assert (root / "src" / "input.txt").read_text() == "repo\n"
