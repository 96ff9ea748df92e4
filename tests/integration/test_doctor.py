"""`buildr-podman doctor` on this machine: where everything works, and where something is broken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"
BUSYBOX_IMAGE = "localhost/buildr-busybox:latest"


def doctor(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildr_podman", "doctor"], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    if subprocess.run(["podman", "image", "exists", BUSYBOX_IMAGE], check=False).returncode:
        pytest.skip(f"image {BUSYBOX_IMAGE} is missing: run scripts/setup.sh")
    root = tmp_path / "project"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("out"))
    return root


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each check's status, by check name."""
    found = {}
    for line in result.stdout.splitlines():
        if line[:4] in ("ok  ", "WARN", "FAIL", "skip"):
            found[line[6:].split(":")[0]] = line[:4].strip()
    return found


def test_all_works_here(project: Path) -> None:
    result = doctor(project)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = lines(result)
    for check in ("podman", "rootless", "subordinate ids", "XDG_RUNTIME_DIR", "OCI runtime",
                  "storage driver", "/dev/net/tun", "inotify watches", "file owners",
                  "API socket", "images",
                  "agent build", "container round trip"):
        assert checks.get(check) in ("ok", "WARN"), f"{check}: {result.stdout}"
    assert "container round trip: a task ran in " in result.stdout
    assert result.stdout.strip().endswith("everything buildr-podman needs works") or \
        "warning" in result.stdout.splitlines()[-1]


def test_a_broken_podman_on_path_fails_with_a_fix(project: Path, tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "podman").write_text("#!/bin/sh\necho 'Error: cannot set up namespace using "
                                 "newuidmap: exit status 1' >&2\nexit 125\n")
    (fake / "podman").chmod(0o755)
    result = doctor(project, {"PATH": f"{fake}:{os.environ['PATH']}"})
    assert result.returncode == 3
    out = result.stdout.splitlines()
    failed = out.index(next(line for line in out if line.startswith("FAIL  podman:")))
    assert "newuidmap" in out[failed]
    assert out[failed + 1].startswith("      fix: check /etc/subuid and /etc/subgid")
    checks = lines(result)
    assert checks["container round trip"] == "skip" and checks["API socket"] == "skip"
    assert checks["XDG_RUNTIME_DIR"] == "ok", "checks that need no podman still run"
    assert out[-1] == "1 problem(s) to fix: podman"


def test_a_runtime_that_fails_on_this_cgroup_layout(project: Path, tmp_path: Path) -> None:
    """A runtime that answers --version but cannot start a container, as crun does here."""
    runtime = tmp_path / "fakerun"
    runtime.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "fakerun version 1.0"; '
                       'exit 0; }\necho "cgroups in hybrid mode not supported" >&2\nexit 1\n')
    runtime.chmod(0o755)
    conf = tmp_path / "containers.conf"
    conf.write_text('[containers]\nlog_driver = "k8s-file"\n[engine]\nruntime = "fakerun"\n'
                    'cgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                    f'[engine.runtimes]\nfakerun = ["{runtime}"]\n')
    result = doctor(project, {"CONTAINERS_CONF": str(conf)})
    assert result.returncode == 3, result.stdout
    out = result.stdout.splitlines()
    failed = next(i for i, line in enumerate(out)
                  if line.startswith("FAIL  container round trip:"))
    assert "cgroups in hybrid mode not supported" in out[failed]
    assert out[failed + 1] == (f'      fix: install runc (apt-get install runc) and put [engine] '
                               f'runtime = "runc" in the file CONTAINERS_CONF names ({conf})')
    assert lines(result)["podman"] == "ok"
