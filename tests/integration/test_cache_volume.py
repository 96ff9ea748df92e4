"""`cache_volume { target }`: a task's persistent state across runs (a compiler cache), never
returned, and removed by `clean --cache`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_faults import buildr, need_image

from buildr_podman.model import ContainerSpec, Project, Task
from buildr_podman.podman.cache_volumes import volume_name

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

IMAGE = "localhost/buildr-busybox:latest"
CONFIG = '''
task "script" "count" {{
  container {{
    image = "{image}"
    {user}
    cache_volume {{ target = "/cache" }}
  }}
  script = <<-EOT
    n=$(cat /cache/count 2>/dev/null || echo 0)
    n=$((n + 1))
    echo $n > /cache/count
    echo $n > count.txt
  EOT
}}
'''


def test_a_cache_volume_keeps_its_content_across_runs_and_clean_cache_removes_it(
        tmp_path: Path) -> None:
    need_image(IMAGE)
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(CONFIG.format(image=IMAGE, user=""))
    out = root / ".buildr" / "out" / "count"
    task = Task(name="count", module_type="script", container=ContainerSpec(image=IMAGE),
                script="")
    name = volume_name(Project(root=root, out_dir=out), task, "/cache")
    try:
        for expected in ("1\n", "2\n", "3\n"):
            result = buildr(root, "run", "--output", "plain", "count")
            assert result.returncode == 0, result.stderr
            assert sorted(p.name for p in out.iterdir()) == ["count.txt"]
            assert (out / "count.txt").read_text() == expected
        cleaned = buildr(root, "clean", "--cache")
        assert cleaned.returncode == 0, cleaned.stderr
        assert subprocess.run(["podman", "volume", "exists", name], check=False).returncode == 1
        assert buildr(root, "run", "--output", "plain", "count").returncode == 0
        assert (out / "count.txt").read_text() == "1\n"
    finally:
        subprocess.run(["podman", "volume", "rm", "-f", name], check=False, capture_output=True)
