"""`buildr-podman clean` after a run was killed with SIGKILL, and beside a run that still goes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

BUSYBOX_IMAGE = "localhost/buildr-busybox:latest"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    if subprocess.run(["podman", "image", "exists", BUSYBOX_IMAGE], check=False).returncode:
        pytest.skip(f"image {BUSYBOX_IMAGE} is missing: run scripts/setup.sh")
    root = tmp_path / "project"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(
        f'task "script" "sleeper" {{\n  container {{ image = "{BUSYBOX_IMAGE}" }}\n'
        '  script = "echo sleeping; sleep 600"\n}\n'
        # inputs copied in: its pod comes with a workspace volume
        f'task "script" "copied" {{\n  container {{\n    image = "{BUSYBOX_IMAGE}"\n'
        '    inputs = "copy"\n  }\n  script = "echo sleeping; sleep 600"\n}\n')
    return root


def buildr(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildr_podman", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def start_run(cwd: Path, task: str = "sleeper") -> subprocess.Popen[str]:
    run = subprocess.Popen([sys.executable, "-m", "buildr_podman", "run", task,
                            "--output", "plain"], cwd=cwd, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    assert run.stdout is not None
    for line in run.stdout:  # the task's own output: its pod is up
        if "sleeping" in line:
            return run
    run.wait()
    pytest.fail(f"the run ended before its task started (exit {run.returncode})")


def pods_of(pid: int) -> list[str]:
    listing = subprocess.run(["podman", "pod", "ps", "--filter", f"label=io.buildr-podman={pid}",
                              "--format", "{{.Name}}"], capture_output=True, text=True,
                             check=True)
    return listing.stdout.split()


def old_agent_build() -> Path:
    """A stale bundle of another agent version, unused for two hours."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    stale = cache / "buildr-podman" / "agent" / "0000test0stale00"
    (stale / "_internal").mkdir(parents=True, exist_ok=True)
    (stale / "buildr-agent").write_bytes(b"\0" * 1000)
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    return stale


def volumes_of(pid: int) -> list[str]:
    listing = subprocess.run(["podman", "volume", "ls", "--filter",
                              f"label=io.buildr-podman={pid}", "--format", "{{.Name}}"],
                             capture_output=True, text=True, check=True)
    return listing.stdout.split()


def test_clean_removes_what_a_killed_run_left(project: Path) -> None:
    run = start_run(project, "copied")
    pods = pods_of(run.pid)
    assert len(pods) == 1
    assert volumes_of(run.pid) == [f"{pods[0]}-workspace"]
    # No clean-up: pod, volume and the API's socket directory stay (its service dies with it).
    empty = list(Path(tempfile.gettempdir()).glob(f"buildr-podman-empty-{run.pid}-*"))
    assert len(empty) == 1
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert pods_of(run.pid) == pods
    stale = old_agent_build()
    result = buildr("clean", cwd=project)
    assert result.returncode == 0, result.stderr
    said = result.stdout
    assert f"removed pod {pods[0]} (its run, pid {run.pid}, is gone)" in said
    assert f"removed volume {pods[0]}-workspace" in said
    assert "removed API socket directory " in said or "stopped podman API service" in said
    assert f"removed agent build {stale} (another agent version" in said
    assert not stale.exists()
    assert f"removed {empty[0]} (an empty directory of a run that is gone)" in said
    assert not empty[0].exists()
    assert pods_of(run.pid) == [] and volumes_of(run.pid) == []
    again = buildr("clean", cwd=project)
    assert f"{run.pid}" not in again.stdout


def test_clean_keeps_a_run_that_still_goes(project: Path) -> None:
    run = start_run(project)
    try:
        result = buildr("clean", cwd=project)
        pods = pods_of(run.pid)
        assert len(pods) == 1, "still there"
        assert f"kept pod {pods[0]}: its run (pid {run.pid}) is still going" in result.stdout
    finally:
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=60) == 130
    assert pods_of(run.pid) == []
