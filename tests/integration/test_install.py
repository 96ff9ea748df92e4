"""Installs like a Python tool: a wheel built from the repository with `python -m build`, put
into a fresh venv with pip, runs a task with no other step (the agent is built on the first
run, and says so)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_faults import need_image

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

REPO = Path(__file__).resolve().parents[2]
BUSYBOX_IMAGE = "localhost/buildr-busybox:latest"
# What a checkout has that is no source: caches, venvs, build output, a built extension.
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", ".pytest_cache",
                                     ".mypy_cache", ".ruff_cache", ".hypothesis", "build",
                                     "dist", "*.egg-info", "*.so", "out")
TASK = '''buildr { out_dir = "results" }
task "script" "greet" {
  container { image = "localhost/buildr-busybox:latest" }
  script = "mkdir -p out && echo installed > out/greeting.txt"
}
'''


def _run(argv: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            timeout=900, check=False, **kwargs)
    assert result.returncode == 0, f"{argv}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh venv holding only the wheel and its dependencies."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", root / "dist", source])
    wheels = list((root / "dist").glob("buildr_podman-*.whl"))
    assert len(wheels) == 1, wheels
    _run([sys.executable, "-m", "venv", root / "venv"])
    _run([root / "venv" / "bin" / "python", "-m", "pip", "install", "-q", wheels[0]])
    return root / "venv" / "bin"


def test_a_wheel_in_a_fresh_venv_runs_a_task(installed: Path, tmp_path: Path) -> None:
    need_image(BUSYBOX_IMAGE)
    project = tmp_path / "project"
    (project / ".buildr").mkdir(parents=True)
    (project / ".buildr" / "tasks.hcl").write_text(TASK)
    # An empty cache: the first run must build the agent itself. PATH without the test venv:
    # the installed command finds what it needs on its own.
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                   if Path(sys.executable).parent != Path(p))}
    env.pop("VIRTUAL_ENV", None)
    first = _run([installed / "buildr-podman", "run", "greet", "--output", "plain"],
                 cwd=project, env=env)
    assert (project / "results/greet/out/greeting.txt").read_text() == "installed\n"
    said = [line for line in first.stderr.splitlines() if line.startswith("buildr-podman: ")]
    assert said[0] == ("buildr-podman: first run of this version: building the in-container "
                       "agent (once, 10-20 s)"), first.stderr
    assert said[1].startswith("buildr-podman: built the agent in "), first.stderr
    second = _run([installed / "buildr-podman", "run", "greet", "--output", "plain"],
                  cwd=project, env=env)
    assert "building the in-container agent" not in second.stderr, "built once, then reused"
    assert not list(project.rglob("junit.xml")), "only what was installed runs: no plugins"
